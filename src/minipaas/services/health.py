"""Readiness of the parts the platform depends on."""

from __future__ import annotations

from sqlalchemy import text

from minipaas.db.session import get_engine
from minipaas.queue import new_redis
from minipaas.runtime import get_runtime
from minipaas.services.routing import get_router


def check_database() -> str | None:
    """None when PostgreSQL answers, else what is wrong."""
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; say which
        return f"database: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def check_redis() -> str | None:
    # A probe's own client, without retries: a readiness check says at once that Redis is
    # down (with the default retries each check took ~4.7 s)
    client = new_redis(retries=False)
    try:
        client.ping()
    except Exception as exc:
        return f"redis: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def check_docker() -> str | None:
    try:
        get_runtime().ping()
    except Exception as exc:
        return f"docker: {exc}"
    return None


def check_router() -> str | None:
    # The public side only: in the compose install the API has no access to the control socket
    if not get_router().answers():
        return "router: nginx does not answer on its port"
    return None


def readiness() -> dict[str, str | None]:
    return {
        "database": check_database(),
        "redis": check_redis(),
        "docker": check_docker(),
        "router": check_router(),
    }
