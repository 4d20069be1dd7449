"""Starts a whole throw-away platform for the tests: real PostgreSQL, Redis, nginx,
Docker engine, API and worker, each on its own free loopback port under a temp DATA_DIR."""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from minipaas.config import Settings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    settings: Settings
    env: dict[str, str]

    @property
    def api_url(self) -> str:
        return self.settings.api_url

    @property
    def router_url(self) -> str:
        return self.settings.router_url


def stack_env(data_dir: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(data_dir),
        "INSTANCE_NAME": f"mpt{secrets.token_hex(3)}",
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(free_port()),
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(free_port()),
        "POSTGRES_USER": "minipaas",
        "POSTGRES_PASSWORD": secrets.token_urlsafe(12),
        "POSTGRES_DB": "minipaas",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
        "ROUTER_HOST": "127.0.0.1",
        "ROUTER_PORT": str(free_port()),
        "READY_TIMEOUT_SECONDS": "20",
        "STOP_GRACE_SECONDS": "5",
    }


def apply_env(env: dict[str, str]) -> None:
    """Points this process's settings at the stack (settings and clients are cached)."""
    os.environ.update(env)
    from minipaas.config import get_settings
    from minipaas.db.session import _session_factory, get_engine
    from minipaas.queue import get_redis
    from minipaas.runtime.docker_runtime import get_runtime
    from minipaas.services.routing import get_router

    for cached in (get_settings, get_engine, _session_factory, get_redis, get_runtime, get_router):
        cached.cache_clear()


def wait_ready(api_url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{api_url}/health/ready", timeout=3)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"the test platform did not become ready: {last}")
