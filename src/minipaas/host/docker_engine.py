"""Makes sure a Docker engine answers, starting dockerd when none does."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from minipaas.host.errors import HostServiceError


def docker_answers() -> bool:
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return result.returncode == 0


def ensure_docker_engine(log_file: Path, timeout: float = 60.0) -> None:
    if docker_answers():
        return
    if shutil.which("dockerd") is None:
        raise HostServiceError("no Docker engine answers and dockerd is not installed")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker_answers():
            return
        time.sleep(0.5)
    raise HostServiceError(f"dockerd did not answer within {timeout:.0f} s; see {log_file}")
