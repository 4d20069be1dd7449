"""The FastAPI application factory."""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from minipaas import __version__, logs, metrics
from minipaas.api.routes import apps, domains, health, users
from minipaas.api.routes import metrics as platform_metrics
from minipaas.db.session import get_session
from minipaas.host.lifeline import die_with_parent
from minipaas.services import audit
from minipaas.services.errors import ServiceError, TooManyRequests, Unauthorized

log = logging.getLogger(__name__)
access_log = logging.getLogger("minipaas.access")
# Set by `minipaas api` for its worker processes
DIE_WITH_PARENT_ENV = "MINIPAAS_DIE_WITH_PARENT"

# Prefixes our own router puts in front of the API; only these are trusted
_KNOWN_PREFIXES = {b"/api"}


class ForwardedPrefixMiddleware:
    """Serves /docs correctly behind the router at /api/ by honouring X-Forwarded-Prefix."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", []):
                if name == b"x-forwarded-prefix" and value in _KNOWN_PREFIXES:
                    scope = dict(scope, root_path=value.decode())
                    break
        await self.app(scope, receive, send)


def create_app() -> FastAPI:
    if os.environ.get("MINIPAAS_JSON_LOGS") == "1":
        logs.configure_json_logging()
    if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
        # Each uvicorn worker process builds the app: none outlives a killed master
        die_with_parent()
    app = FastAPI(
        title="mini-paas",
        version=__version__,
        description="Register apps, deploy them as containers, reach them at /apps/{id}/.",
    )
    app.include_router(health.router)
    app.include_router(apps.collection)
    app.include_router(apps.item)
    app.include_router(domains.router)
    app.include_router(users.router)
    app.include_router(platform_metrics.router)
    app.add_api_route("/ui", dashboard, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyTimeoutError, _database_busy)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _database_down)  # type: ignore[arg-type]
    app.middleware("http")(_log_and_audit)
    app.add_middleware(ForwardedPrefixMiddleware)
    return app


def dashboard() -> FileResponse:
    """The dashboard: a static page; every call it makes carries the user's token."""
    return FileResponse(_UI_PAGE, media_type="text/html")


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


async def _database_busy(_: Request, exc: SQLAlchemyTimeoutError) -> JSONResponse:
    log.warning("database pool exhausted: %s", exc)
    return JSONResponse(
        {"detail": "the platform is busy (no database connection free); try again shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return JSONResponse(
        {"detail": "the database is not reachable; try again shortly"}, status_code=503
    )


async def _log_and_audit(request: Request, call_next: Any) -> Any:
    """One access line per request (with its request id), metrics, and the outcome of the
    audit event the authentication step opened."""
    started = time.perf_counter()
    rid = logs.clean_request_id(request.headers.get("x-request-id")) or uuid.uuid4().hex
    token = logs.request_id.set(rid)
    try:
        response = await call_next(request)
    except Exception:
        await _close_audit_event(request, 500)
        raise
    finally:
        logs.request_id.reset(token)
    elapsed = time.perf_counter() - started
    response.headers["X-Request-ID"] = rid
    route = getattr(request.scope.get("route"), "path", "unmatched")
    metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    metrics.HTTP_LATENCY.labels(request.method, route).observe(elapsed)
    caller = getattr(request.state, "caller", None)
    access_log.info(
        "%s %s %s",
        request.method,
        route,
        response.status_code,
        extra={
            "request_id": rid,
            "method": request.method,
            "route": route,
            "path": request.url.path,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 1),
            "user": caller.username if caller else None,
        },
    )
    await _close_audit_event(request, response.status_code)
    return response


_UI_PAGE = Path(__file__).parent / "static" / "ui.html"


async def _close_audit_event(request: Request, status_code: int) -> None:
    event_id: int | None = getattr(request.state, "audit_event_id", None)
    if event_id is not None:
        await run_in_threadpool(_record_outcome, event_id, status_code)


def _record_outcome(event_id: int, status_code: int) -> None:
    """The change is recorded already; a lost outcome leaves it "requested", never unlogged."""
    try:
        with get_session() as db:
            audit.close_event(db=db, event_id=event_id, status_code=status_code)
    except Exception:  # the change itself is done; this must not turn it into a 500
        log.exception("outcome %s of audit event %s not recorded", status_code, event_id)
