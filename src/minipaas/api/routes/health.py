"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from minipaas.services import health

router = APIRouter(tags=["health"])


@router.get("/health")
def liveness() -> dict[str, str]:
    """The API process answers."""
    return {"status": "ok"}


@router.get("/health/db")
@router.get("/db-health", include_in_schema=False)
def database_health() -> JSONResponse:
    """PostgreSQL answers."""
    problem = health.check_database()
    if problem:
        return JSONResponse({"status": "unavailable", "detail": problem}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/health/ready")
def readiness() -> JSONResponse:
    """Database, Redis, Docker engine and router all answer; 503 names what is down."""
    checks = health.readiness()
    down = {name: problem for name, problem in checks.items() if problem}
    body: dict[str, object] = {
        "status": "ready" if not down else "unavailable",
        "checks": {name: (problem or "ok") for name, problem in checks.items()},
    }
    if down:
        body["detail"] = "not ready: " + "; ".join(down.values())
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
