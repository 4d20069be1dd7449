"""A real image registry for tests: Debian's docker-registry on a free loopback port, with
htpasswd auth, its config written by the platform's own code (host/registry.py)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from minipaas.host.registry import REGISTRY_BIN, LocalRegistry


@dataclass(frozen=True)
class RunningRegistry:
    registry: LocalRegistry
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def address(self) -> str:
        return self.registry.address

    @property
    def user(self) -> str:
        return self.registry.user

    @property
    def password(self) -> str:
        return self.registry.password

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_registry(directory: Path, *, port: int | None = None) -> RunningRegistry:
    """Starts docker-registry with its data and log in `directory`; stop it with stop_registry."""
    if shutil.which(REGISTRY_BIN) is None:
        raise RuntimeError("docker-registry is not installed: scripts/install-deps.sh --dev")
    registry = LocalRegistry(
        dir=directory,
        port=port or free_loopback_port(),
        user="minipaas",
        password=secrets.token_urlsafe(24),
    )
    registry.write_config()
    log_file = directory / "registry.log"
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            registry.server_command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: stopped whole, never by name
        )
    running = RunningRegistry(registry, process, log_file)
    try:
        registry.wait_ready(timeout=15)
    except Exception:
        stop_registry(running)
        raise RuntimeError(f"docker-registry did not start:\n{running.log()}") from None
    return running


def stop_registry(running: RunningRegistry, timeout: float = 10.0) -> None:
    process = running.process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running_registry() -> Iterator[RunningRegistry]:
    """A registry of its own in a temp dir, stopped and deleted afterwards."""
    top = Path(tempfile.mkdtemp(prefix="minipaas-test-registry-"))
    running = start_registry(top / "registry")
    try:
        yield running
    finally:
        try:
            stop_registry(running)
        finally:
            shutil.rmtree(top, ignore_errors=True)
