"""Fixtures: a real platform (PostgreSQL, Redis, nginx, Docker, API, worker) per test session."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import build_test_images
from tests.support.stack import Stack, apply_env, stack_env, wait_ready


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The whole platform, started the way `make up` starts it."""
    from minipaas.config import get_settings
    from minipaas.db import migrate
    from minipaas.host.platform import local_postgres, local_redis, processes
    from minipaas.services.routing import get_router, publish_routes

    # PostgreSQL runs as its own user, which must be able to reach its data directory
    data_dir = Path(tempfile.mkdtemp(prefix="minipaas-test-"))
    data_dir.chmod(0o711)
    env = stack_env(data_dir)
    apply_env(env)
    settings = get_settings()
    postgres = local_postgres(settings)
    redis = local_redis(settings)
    assert postgres is not None and redis is not None
    started = []
    try:
        postgres.start()
        started.append(postgres.stop)
        redis.start()
        started.append(redis.stop)
        migrate.upgrade("head")
        publish_routes()
        started.append(get_router().stop)
        for process in processes(settings):
            process.start(env)
            started.append(process.stop)
        build_test_images()
        wait_ready(settings.api_url)
        yield Stack(settings=settings, env=env)
    finally:
        _remove_test_containers(settings.instance_name)
        for stop in reversed(started):
            with contextlib.suppress(Exception):
                stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _remove_test_containers(instance: str) -> None:
    import docker

    client = docker.from_env()
    for container in client.containers.list(
        all=True, filters={"label": f"io.minipaas.instance={instance}"}
    ):
        with contextlib.suppress(Exception):
            container.remove(force=True)


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=60) as client:
        yield client


@pytest.fixture
def router(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.router_url, timeout=30) as client:
        yield client


@pytest.fixture
def app_name(request: pytest.FixtureRequest) -> str:
    """A unique, valid app name per test."""
    import secrets

    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    return f"{base}-{secrets.token_hex(3)}"
