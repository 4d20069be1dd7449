"""Every platform process is supervised: SIGKILL any one and the platform is back by itself,
with nothing of the killed process left behind."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import docker
import httpx
import pytest

from minipaas.host.platform import service
from minipaas.host.service_exec import group_members, recorded_group
from tests.support.flows import create_app, deploy, wait_for_deployment
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

PROGRAMS = ["postgres", "redis", "worker", "api", "router"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _serving(stack: Stack, host: str) -> bool:
    try:
        ready = httpx.get(f"{stack.api_url}/health/ready", timeout=2).status_code == 200
        page = httpx.get(stack.router_url, headers={"Host": host}, timeout=2)
    except httpx.HTTPError:
        return False
    return ready and page.text == "hello from v1\n"


@pytest.mark.parametrize("program", PROGRAMS)
def test_a_killed_process_comes_back_by_itself_and_leaves_nothing(
    stack: Stack, api: httpx.Client, app_name: str, program: str
) -> None:
    app = create_app(api, app_name, HELLO_V1)
    assert deploy(api, app["id"])["status"] == "succeeded"
    host = f"{app['name']}.{stack.settings.apps_domain}"
    killed = service(stack.settings, program)
    pid = killed.pid()
    assert pid is not None
    # the master alone: its workers (nginx, uvicorn) or backends (PostgreSQL) stay behind
    old_group = set(group_members(os.getpgid(pid)))
    os.kill(pid, signal.SIGKILL)

    eventually(
        lambda: killed.pid() not in (None, pid) and _serving(stack, host),
        timeout=10,
        interval=0.1,
        message=f"the platform did not serve again after {program} was killed",
    )
    eventually(
        lambda: not [p for p in old_group if _alive(p)],
        timeout=5,
        interval=0.1,
        message=f"processes of the killed {program} were left running",
    )
    # and work goes on: a deploy issued right after succeeds
    api.patch(f"/apps/{app['id']}", json={"image": HELLO_V2})
    result = wait_for_deployment(
        api, app["id"], api.post(f"/apps/{app['id']}/deploy").json()["id"], timeout=30
    )
    assert result["status"] == "succeeded", result["error"]


def test_postgres_runs_without_the_platforms_secrets_in_its_environment(stack: Stack) -> None:
    """It runs as user postgres: anything running as that user reads /proc/<pid>/environ,
    and with Redis's password could queue jobs for the workers, which run as root."""
    from minipaas.host.supervisor import Supervisor

    pid = Supervisor(stack.settings).program_pid("postgres")
    assert pid is not None
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert names <= {"PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME"}, names
    assert "REDIS_PASSWORD" not in names and "DATABASE_URL" not in names


def test_make_down_leaves_no_process_of_the_install() -> None:
    """A platform of its own (started and stopped by `make up`'s and `make down`'s code)."""
    with running_stack(prefix="minipaas-down-") as own:
        from minipaas.host.supervisor import Supervisor

        supervisor = Supervisor(own.settings)
        groups = {
            name: pgid
            for name in PROGRAMS
            if (pgid := recorded_group(supervisor.group_file(name))) is not None
        }
        assert set(groups) == set(PROGRAMS)
        processes = {pid for pgid in groups.values() for pid in group_members(pgid)}
        supervisord = supervisor.pid()
        assert processes and supervisord is not None
    # running_stack's exit is platform.down()
    left = [pid for pid in [*processes, supervisord] if _alive(pid)]
    assert left == [], f"left running after down: {left}"


def test_chaos_kills_during_deploys_end_with_every_invariant_holding(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    """About a minute: a platform process SIGKILLed every 4-7 s while apps are redeployed."""
    rng = random.Random(1234)  # the same kills every run
    apps = [create_app(api, f"{app_name}-{n}", HELLO_V1) for n in range(3)]
    for app in apps:
        assert deploy(api, app["id"])["status"] == "succeeded"
    deadline = time.monotonic() + 45
    asked: list[tuple[int, int]] = []
    next_kill = time.monotonic() + 2
    while time.monotonic() < deadline:
        if time.monotonic() >= next_kill:
            pid = service(stack.settings, rng.choice(PROGRAMS)).pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            next_kill = time.monotonic() + rng.uniform(4, 7)
        app = rng.choice(apps)
        try:
            response = api.post(f"/apps/{app['id']}/deploy", timeout=5)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 202:
            asked.append((app["id"], response.json()["id"]))
        elif response is not None:
            assert response.status_code in (409, 503), response.text  # never a 500
        time.sleep(0.5)

    eventually(
        lambda: httpx.get(f"{stack.api_url}/health/ready", timeout=2).status_code == 200,
        timeout=20,
        interval=0.2,
        retry_on=(httpx.HTTPError,),
        message="the platform did not become ready after the chaos",
    )
    assert asked, "no deploy was accepted during the chaos"
    for app_id, deployment_id in asked:  # every deployment ended, none stuck
        try:
            # a 503 right after a kill is the answer to expect ("try again shortly")
            wait_for_deployment(api, app_id, deployment_id, timeout=90, through_outages=True)
        except AssertionError as exc:
            stuck = api.get(f"/apps/{app_id}/deployments/{deployment_id}").json()
            events = api.get(f"/apps/{app_id}/deployments/{deployment_id}/events").json()
            raise AssertionError(f"{exc}\nnow: {stuck}\nevents: {events}") from None
    engine = docker.from_env()
    for app in apps:  # what the platform says runs, runs, and answers by host
        current = api.get(f"/apps/{app['id']}").json()
        if current["status"] == "running":
            assert engine.containers.get(current["container_name"]).status == "running"
        final = deploy(api, app["id"])
        assert final["status"] == "succeeded", final["error"]
        host = f"{app['name']}.{stack.settings.apps_domain}"
        eventually(
            lambda host=host: _serving(stack, host),  # type: ignore[misc]
            timeout=10,
            interval=0.2,
            message=f"{host} did not serve after the chaos",
        )
