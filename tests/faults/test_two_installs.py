"""Two installs on one host with the same INSTANCE_NAME: the second is refused, and neither
removes what the other made (issue 15, item 2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import docker
import httpx
import pytest

from minipaas.host import platform
from minipaas.runtime import get_runtime, labels
from minipaas.services import install_identity
from minipaas.worker import reconciler
from tests.support.flows import create_app, deploy, platform_containers
from tests.support.images import HELLO_V1
from tests.support.stack import Stack, stack_env, wait_ready
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

OTHER_INSTALL = "0123456789abcdef0123456789abcdef"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minipaas", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@contextmanager
def _second_install(stack: Stack) -> Iterator[dict[str, str]]:
    """A throw-away install's settings: its own DATA_DIR and ports, the first's INSTANCE_NAME.
    Torn down without touching containers or networks (they are the first install's)."""
    data_dir = Path(tempfile.mkdtemp(prefix="minipaas-second-"))
    data_dir.chmod(0o711)
    env = {**stack_env(data_dir), "INSTANCE_NAME": stack.settings.instance_name}
    try:
        yield env
    finally:
        _cli(env, "platform", "down")  # in case it was not refused
        shutil.rmtree(data_dir, ignore_errors=True)


def _stray(instance: str, app_id: int, install_id: str | None) -> str:
    """A container as an install would have left it, created (not started)."""
    stamp = {labels.INSTALL_ID: install_id} if install_id else {}
    container = docker.from_env().containers.create(
        HELLO_V1, labels={**labels.container_labels(instance, app_id, 1), **stamp}
    )
    return str(container.id)


def _exists(container_id: str) -> bool:
    try:
        docker.from_env().containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True


def test_a_second_install_with_the_same_instance_name_is_refused(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    before = platform_containers(stack.settings.instance_name, app_id)
    assert before

    with _second_install(stack) as second:
        refused = _cli(second, "platform", "up")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "error: another install already uses INSTANCE_NAME" in refused.stderr
        assert "Set a different INSTANCE_NAME" in refused.stderr
        # nothing of it started, and no id was kept: a retry is judged the same way
        data_dir = Path(second["DATA_DIR"])
        assert not (data_dir / "install-id").exists()
        assert not (data_dir / "supervisor" / "supervisord.conf").exists()

    assert platform_containers(stack.settings.instance_name, app_id) == before
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"
    assert api.get(f"/apps/{app_id}").json()["status"] == "running"


def test_restarting_the_same_install_is_not_refused(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    install_id = install_identity.read_install_id(stack.settings)
    assert install_id is not None
    # The install's own apps network exists only when apps need it (APPS_BRIDGE): stamped too
    for network in docker.from_env().networks.list(names=[stack.settings.apps_network]):
        assert network.attrs["Labels"][labels.INSTALL_ID] == install_id
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    container_id = deploy(api, app_id)["container_id"]
    stamped = docker.from_env().containers.get(container_id).labels
    assert stamped[labels.INSTALL_ID] == install_id

    platform.up(stack.settings, lambda _: None)  # while it runs
    assert _cli(stack.env, "platform", "down").returncode == 0
    restarted = _cli(stack.env, "platform", "up")  # from stopped, its containers still there
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr

    wait_ready(stack.api_url)
    assert install_identity.read_install_id(stack.settings) == install_id
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"


def test_the_reconciler_removes_only_what_this_install_made(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = stack.settings.instance_name
    mine = get_runtime().install_id
    assert mine is not None
    unknown_app = 900_000 + os.getpid() % 1000
    foreign = _stray(instance, unknown_app, OTHER_INSTALL)
    unstamped = _stray(instance, unknown_app, None)
    own = _stray(instance, unknown_app, mine)
    try:
        monkeypatch.setattr(reconciler, "UNKNOWN_CONTAINER_GRACE", timedelta(0))
        done = reconciler._remove_unknown_containers()
        assert any(own[:12] in line for line in done), done
        assert not _exists(own)
        # another install's, and one made before install ids: nobody here knows whose they are
        assert _exists(foreign) and _exists(unstamped)
        assert not any(foreign[:12] in line or unstamped[:12] in line for line in done)
    finally:
        for container_id in (foreign, unstamped, own):
            get_runtime().remove(container_id)


def test_deleting_an_app_leaves_another_installs_container_of_the_same_id(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    foreign = _stray(stack.settings.instance_name, app_id, OTHER_INSTALL)
    try:
        assert api.delete(f"/apps/{app_id}").status_code in (200, 202, 204)
        eventually(
            lambda: platform_containers(stack.settings.instance_name, app_id) == [foreign],
            timeout=30,
            interval=0.2,
            message="the app's own containers were not removed",
        )
    finally:
        get_runtime().remove(foreign)
