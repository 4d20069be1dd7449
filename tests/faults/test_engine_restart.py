"""The Docker engine restarts: running apps come back, behind the router, with true statuses."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import docker
import httpx
import pytest

from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.waiting import eventually

# alone: it restarts the engine under every session's containers
pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.alone]


def _engine_answers() -> bool:
    result = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return result.returncode == 0


def _dockerd_pid() -> int | None:
    found = subprocess.run(["pgrep", "-xo", "dockerd"], capture_output=True, text=True)
    return int(found.stdout.strip()) if found.returncode == 0 else None


def _default_bridge_options() -> dict[str, str]:
    return dict(docker.from_env().api.inspect_network("bridge")["Options"])


def _restart_engine() -> None:
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=120)
        return
    pid = _dockerd_pid()
    assert pid is not None, "no dockerd process to restart"
    # Started again as it was (scripts/ensure-docker.sh passes --icc=false): a plain `dockerd`
    # would leave every later test, and the machine, with another engine than before
    command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    os.kill(pid, signal.SIGTERM)
    eventually(
        lambda: _dockerd_pid() != pid, timeout=60, interval=0.2, message="dockerd did not stop"
    )
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)


def test_apps_come_back_after_the_engine_restarts(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    second_id = create_app(api, f"{app_name}-2", HELLO_V1)["id"]
    assert deploy(api, second_id)["status"] == "succeeded"
    stopped_id = create_app(api, f"{app_name}-off", HELLO_V1)["id"]
    assert deploy(api, stopped_id)["status"] == "succeeded"
    assert api.post(f"/apps/{stopped_id}/stop").status_code == 200

    before = _default_bridge_options()
    _restart_engine()
    # 90 s in all for the engine and then the app behind the router to come back
    restarted = time.monotonic()
    eventually(
        _engine_answers, timeout=90, interval=0.5, message="the Docker engine did not come back"
    )
    # the platform's healer starts them again (Docker has no restart policy for them)
    for running_id in (app_id, second_id):
        eventually(
            lambda running_id=running_id: (
                router.get(f"/apps/{running_id}/").text == "hello from v1\n"
            ),
            timeout=90 - (time.monotonic() - restarted),
            interval=0.5,
            retry_on=(httpx.HTTPError,),
            message=f"app {running_id} did not come back behind the router",
        )
        assert api.get(f"/apps/{running_id}").json()["status"] == "running"
    # a stopped app stays stopped and still shows the 503 page
    assert api.get(f"/apps/{stopped_id}").json()["status"] == "stopped"
    assert router.get(f"/apps/{stopped_id}/").status_code == 503
    assert api.get("/health/ready").status_code == 200
    # the same engine as before: apps keep the network they were on (APPS_BRIDGE)
    assert _default_bridge_options() == before
