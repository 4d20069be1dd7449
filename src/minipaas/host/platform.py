"""Brings the whole platform up or down on this host (what `make up` / `make down` run)."""

from __future__ import annotations

import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from minipaas.config import Settings, get_settings
from minipaas.host.docker_engine import ensure_docker_engine
from minipaas.host.errors import HostServiceError
from minipaas.host.postgres import LocalPostgres
from minipaas.host.processes import ManagedProcess, api_process, worker_process
from minipaas.host.redis import LocalRedis
from minipaas.runtime import get_runtime
from minipaas.runtime.busybox_image import DEMO_IMAGE, ensure_demo_image
from minipaas.services.bootstrap import AdminCredentials, ensure_admin

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def local_postgres(settings: Settings) -> LocalPostgres | None:
    """The cluster we manage, or None when POSTGRES_HOST points elsewhere."""
    if settings.postgres_host not in _LOOPBACK:
        return None
    return LocalPostgres(
        data_dir=settings.data_dir / "postgres" / "data",
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password,
        database=settings.postgres_db,
    )


def local_redis(settings: Settings) -> LocalRedis | None:
    if settings.redis_host not in _LOOPBACK:
        return None
    return LocalRedis(settings.data_dir / "redis", settings.redis_port, settings.redis_password)


def processes(settings: Settings) -> list[ManagedProcess]:
    return [api_process(settings), worker_process(settings)]


def generate_local_passwords(settings: Settings) -> bool:
    """Random passwords for the PostgreSQL and Redis we run, unless the environment sets them:
    any local user could otherwise queue jobs for the root worker or edit the database."""
    created = False
    for field, path, managed in (
        ("postgres_password", settings.postgres_password_file, local_postgres(settings)),
        ("redis_password", settings.redis_password_file, local_redis(settings)),
    ):
        if managed is None or field in settings.model_fields_set or path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        created = True
    return created


def up(settings: Settings, say: Callable[[str], None]) -> AdminCredentials:
    from minipaas.db import migrate
    from minipaas.services.routing import sync_routes

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if generate_local_passwords(settings):
        get_settings.cache_clear()
        settings = get_settings()
        say(f"generated passwords for the local PostgreSQL and Redis in {settings.data_dir}")
    say("docker engine ...")
    ensure_docker_engine(settings.log_dir / "dockerd.log")
    postgres = local_postgres(settings)
    if postgres is not None:
        say(f"postgresql on 127.0.0.1:{settings.postgres_port} ...")
        postgres.start()
    redis = local_redis(settings)
    if redis is not None:
        say(f"redis on 127.0.0.1:{settings.redis_port} ...")
        redis.start()
    say("migrations ...")
    migrate.upgrade("head")
    admin = ensure_admin(settings)
    if admin.created:
        say(f"created the admin user '{admin.username}'")
    say(f"router (nginx) on {settings.router_host}:{settings.router_port} ...")
    sync_routes()
    # Metrics of processes from an earlier run would mix with the new ones
    shutil.rmtree(settings.run_dir / "metrics", ignore_errors=True)
    for process in processes(settings):
        say(f"{process.name} ...")
        process.start()
    wait_until_ready(settings)
    if ensure_demo_image(get_runtime()):
        say(f"built the demo image {DEMO_IMAGE} (the README's examples deploy it)")
    return admin


def wait_until_ready(settings: Settings, timeout: float = 90.0) -> None:
    url = f"{settings.api_url}/health/ready"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise HostServiceError(f"the platform did not become ready within {timeout:.0f} s: {last}")


def down(settings: Settings, say: Callable[[str], None]) -> None:
    from minipaas.services.routing import get_router

    for process in reversed(processes(settings)):
        say(f"stopping {process.name}")
        process.stop()
    say("stopping router")
    get_router().stop()
    redis = local_redis(settings)
    if redis is not None:
        say("stopping redis")
        redis.stop()
    postgres = local_postgres(settings)
    if postgres is not None:
        say("stopping postgresql")
        postgres.stop()


def status(settings: Settings) -> dict[str, str]:
    from minipaas.services.routing import get_router

    rows: dict[str, str] = {}
    for process in processes(settings):
        pid = process.pid()
        rows[process.name] = f"running (pid {pid})" if pid else "stopped"
    nginx_pid = get_router().pid()
    rows["router"] = f"running (pid {nginx_pid})" if nginx_pid else "stopped"
    redis = local_redis(settings)
    if redis is not None:
        redis_pid = redis.pid()
        rows["redis"] = f"running (pid {redis_pid})" if redis_pid else "stopped"
    postgres = local_postgres(settings)
    if postgres is not None:
        rows["postgresql"] = (
            "running" if postgres.initialized() and postgres.running() else "stopped"
        )
    return rows
