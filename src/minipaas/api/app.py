"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette._utils import get_route_path
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minipaas import __version__, logs, metrics
from minipaas.api.routes import apps, builds, cluster, domains, health, traffic, users
from minipaas.api.routes import metrics as platform_metrics
from minipaas.db.session import (
    autocommit,
    close_async_read_engine,
    close_idle_async_connections,
    close_idle_connections,
)
from minipaas.host.lifeline import die_with_parent
from minipaas.services import audit
from minipaas.services.errors import (
    InvalidRequest,
    ServiceError,
    TooManyRequests,
    Unauthorized,
)

log = logging.getLogger(__name__)
# Set by `minipaas api` for its worker processes
DIE_WITH_PARENT_ENV = "MINIPAAS_DIE_WITH_PARENT"
# How often an API process looks for pooled connections that waited too long
IDLE_CHECK_SECONDS = 10.0

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


class PlatformAPI(FastAPI):
    """FastAPI, with `GET /health` answered before its middleware and routing: probes and
    load balancers call it many times a second for a fixed answer, which through the
    framework cost ~4x the CPU of a bare answer (bench/api_throughput.py). The answer is the
    route's own (health.LIVENESS), with the request id, the access line and the metrics of
    every other request; the route stays for the schema and for any other method. FastAPI's
    OpenTelemetry wrapper (on only with a provider, which the platform configures none of)
    does not see these requests."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and get_route_path(scope) == health.LIVENESS_PATH
        ):
            await _answer_liveness(scope, send)
            return
        await super().__call__(scope, receive, send)


def create_app() -> FastAPI:
    if os.environ.get("MINIPAAS_JSON_LOGS") == "1":
        logs.configure_json_logging(batched=True)
    if os.environ.get(DIE_WITH_PARENT_ENV) == "1":
        # Each uvicorn worker process builds the app: none outlives a killed master
        die_with_parent()
    app = PlatformAPI(
        lifespan=_lifespan,
        title="mini-paas",
        version=__version__,
        description="Register apps, deploy them as containers, reach them at /apps/{id}/.",
    )
    app.include_router(health.router)
    app.include_router(apps.collection)
    app.include_router(apps.item)
    app.include_router(builds.router)
    app.include_router(domains.router)
    app.include_router(users.router)
    app.include_router(platform_metrics.router)
    app.include_router(traffic.router)
    app.include_router(cluster.router)
    app.include_router(cluster.app_router)
    app.add_api_route("/ui", dashboard, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(ServiceError, _service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyTimeoutError, _database_busy)  # type: ignore[arg-type]
    app.add_exception_handler(OperationalError, _database_down)  # type: ignore[arg-type]
    app.add_middleware(RequestLogMiddleware)
    app.add_middleware(ForwardedPrefixMiddleware)  # outermost: the log sees the prefix
    return app


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    closer = asyncio.create_task(_close_idle_connections_every(IDLE_CHECK_SECONDS))
    try:
        yield
    finally:
        closer.cancel()
        with suppress(asyncio.CancelledError):
            await closer
        await close_async_read_engine()  # its connections belong to this event loop


async def _close_idle_connections_every(seconds: float) -> None:
    """An API at rest gets no request to return a connection on: its pools' connections that
    waited too long (db/pools.py) are closed from here."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await close_idle_async_connections()
            close_idle_connections()
        except Exception:
            log.exception("closing idle database connections failed")


def dashboard() -> FileResponse:
    """The dashboard: a static page; every call it makes carries the user's token."""
    return FileResponse(_UI_PAGE, media_type="text/html")


_NOT_AN_OBJECT = ("model_attributes_type", "dict_type", "json_invalid")


class _ErrorJSON(JSONResponse):
    """An error's body, which may quote what the client sent: a lone surrogate ("\\ud800")
    is escaped and NaN or Infinity written as text, where JSONResponse raised (a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with messages that say what to change: no "Value error, " prefix, and a
    body that is not a JSON object (often a missing Content-Type) says to send JSON."""
    content_type = request.headers.get("content-type", "")
    errors = []
    for error in jsonable_encoder(exc.errors()):
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if tuple(error.get("loc", ())) == ("body",) and error.get("type") in _NOT_AN_OBJECT:
            message = (
                "the body must be a JSON object, sent with 'Content-Type: application/json'"
                + (f" (this request said '{content_type}')" if content_type else "")
            )
        errors.append({**error, "msg": message})
    return _ErrorJSON({"detail": errors}, status_code=422)


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    detail: object = exc.message
    if isinstance(exc, InvalidRequest):
        # The same shape as request validation's 422: clients parse one thing
        detail = [
            {"loc": list(loc), "msg": message, "type": "value_error"}
            for loc, message in exc.problems
        ]
    return _ErrorJSON({"detail": detail}, status_code=exc.status_code, headers=headers)


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


class RequestLogMiddleware:
    """Per request: its id (the client's X-Request-ID, or a new one) in every log line and in
    the answer, one access line, the metrics, and the outcome of the audit event the
    authentication step opened. Pure ASGI: BaseHTTPMiddleware cost a task and a memory
    stream per request, most of the time /health took."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _request_id(scope["headers"])
        id_header = (b"x-request-id", rid.encode())
        # Request.state lives in this dict: set here, the routes' values are seen here
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500  # unless the app starts an answer
        audited = False

        async def close_audit_event() -> None:
            nonlocal audited
            event_id: int | None = state.get("audit_event_id")
            if event_id is not None and not audited:
                audited = True
                await run_in_threadpool(_record_outcome, event_id, status)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
                # Before the client has its answer: whoever reads /audit next sees the outcome
                await close_audit_event()
            await send(message)

        token = logs.request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)
            _log_request(scope, state, rid, status, time.perf_counter() - started)
            await close_audit_event()  # no answer was started (the app raised)


_LIVENESS_HEADERS = [
    (b"content-length", str(len(health.LIVENESS)).encode()),
    (b"content-type", b"application/json"),
]


async def _answer_liveness(scope: Scope, send: Send) -> None:
    started = time.perf_counter()
    rid = _request_id(scope["headers"])
    headers = [*_LIVENESS_HEADERS, (b"x-request-id", rid.encode())]
    status = 200
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": health.LIVENESS})
    finally:
        elapsed = time.perf_counter() - started
        _log_request(scope, {}, rid, status, elapsed, route=health.LIVENESS_PATH)


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            clean = logs.clean_request_id(value.decode("latin-1"))
            if clean:
                return clean
            break
    return os.urandom(16).hex()  # as random as uuid4().hex, for a fifth of its cost


def _log_request(
    scope: Scope,
    state: dict[str, Any],
    rid: str,
    status: int,
    elapsed: float,
    route: str | None = None,
) -> None:
    method: str = scope["method"]
    if route is None:
        route = str(getattr(scope.get("route"), "path", "unmatched"))
    metrics.observe_request(method, route, status, elapsed)
    caller = state.get("caller")
    logs.log_access(
        f"{method} {route} {status}",
        {
            "request_id": rid,
            "method": method,
            "route": route,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(elapsed * 1000, 1),
            "user": caller.username if caller else None,
        },
    )


_UI_PAGE = Path(__file__).parent / "static" / "ui.html"


def _record_outcome(event_id: int, status_code: int) -> None:
    """The change is recorded already; a lost outcome leaves it "requested", never unlogged."""
    try:
        with autocommit() as connection:  # one round trip
            audit.close_event(connection=connection, event_id=event_id, status_code=status_code)
    except Exception:  # the change itself is done; this must not turn it into a 500
        log.exception("outcome %s of audit event %s not recorded", status_code, event_id)
