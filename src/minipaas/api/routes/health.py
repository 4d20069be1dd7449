"""Liveness and readiness.

Anyone may ask (load balancers, compose); only an admin sees why a check failed, because the
reasons name internal hosts, ports, users and exception text.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from minipaas.api.deps import OptionalAdmin
from minipaas.services import health

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"
# The liveness answer, also written by api.app.PlatformAPI before any routing
LIVENESS_PATH = "/health"
_ALIVE = {"status": "ok"}
LIVENESS = json.dumps(_ALIVE, separators=(",", ":")).encode()
# Probes read the status; the body says which check failed (and, to an admin, why)
_DOWN: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "a dependency is down: the body says which (and to an admin, why)",
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": {"status": UNAVAILABLE, "database": UNAVAILABLE},
            }
        },
    }
}


@router.get(LIVENESS_PATH)
async def liveness() -> dict[str, str]:
    """The API process answers."""
    return dict(_ALIVE)


@router.get("/health/db", responses=_DOWN)
@router.get("/db-health", include_in_schema=False)
def database_health(is_admin: OptionalAdmin) -> JSONResponse:
    """PostgreSQL answers; an admin's token also shows why not."""
    problem = health.check_database()
    if problem:
        # Operators without a token (the database is down, so none can be checked) find it here
        log.warning("health check failed: %s", problem)
        body = {"status": UNAVAILABLE, "database": UNAVAILABLE}
        if is_admin:
            body["detail"] = problem
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/health/ready", responses=_DOWN)
def readiness(is_admin: OptionalAdmin) -> JSONResponse:
    """Database, Redis, Docker engine and router all answer; 503 says which is down, and to
    an admin why."""
    checks = health.readiness()
    down = {name: problem for name, problem in checks.items() if problem}
    body: dict[str, object] = {
        "status": "ready" if not down else UNAVAILABLE,
        "checks": {name: (UNAVAILABLE if problem else "ok") for name, problem in checks.items()},
    }
    if down:
        log.warning("not ready: %s", "; ".join(down.values()))
        if is_admin:
            body["detail"] = "not ready: " + "; ".join(down.values())
            body["reasons"] = down
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
