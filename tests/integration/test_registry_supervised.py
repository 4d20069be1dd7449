"""The embedded registry as `make up` runs it (RUNTIME=swarm): a program of the platform's
supervisord, on loopback, asking for the password the platform keeps in DATA_DIR, and started
again by the supervisor when it dies."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from minipaas.config import Settings
from minipaas.host.platform import platform_environment, programs
from minipaas.host.registry import embedded_registry, registry_access
from minipaas.host.supervisor import Supervisor
from tests.support.registry import free_loopback_port
from tests.support.waiting import eventually


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short: supervisord's unix socket lives under it (108 bytes at most)
    top = Path(tempfile.mkdtemp(prefix="mpt-reg-"))
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_supervisor_runs_the_registry_with_the_platforms_password(data_dir: Path) -> None:
    for tool in ("supervisord", "docker-registry", "htpasswd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-deps.sh installs it)")
    settings = Settings.model_validate(
        {"data_dir": data_dir, "runtime": "swarm", "registry_port": free_loopback_port()}
    )
    registry = embedded_registry(settings)
    assert registry is not None
    registry.write_config()
    supervisor = Supervisor(settings)
    wanted = [program for program in programs(settings) if program.name == "registry"]
    supervisor.write(wanted, platform_environment(settings))
    try:
        supervisor.start_or_update()
        registry.wait_ready()
        access = registry_access(settings)
        assert access.password is not None
        url = f"http://{access.address}/v2/"
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, auth=(access.user, access.password), timeout=5).status_code == 200
        assert (data_dir / "registry" / "storage").is_dir()

        # Killed, it is started again, with the same password
        pid = supervisor.program_pid("registry")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        eventually(
            lambda: supervisor.program_pid("registry") not in (None, pid),
            timeout=20,
            interval=0.2,
            message="the supervisor did not start the registry again",
        )
        registry.wait_ready()
        assert httpx.get(url, auth=(access.user, access.password), timeout=5).status_code == 200
    finally:
        supervisor.shutdown()
