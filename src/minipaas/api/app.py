"""The FastAPI application factory."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from minipaas import __version__
from minipaas.api.routes import apps, health
from minipaas.services.errors import ServiceError

log = logging.getLogger(__name__)

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
    app = FastAPI(
        title="mini-paas",
        version=__version__,
        description="Register apps, deploy them as containers, reach them at /apps/{id}/.",
    )
    app.include_router(health.router)
    app.include_router(apps.router)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(OperationalError)
    async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is not reachable; try again shortly"}, status_code=503
        )

    app.add_middleware(ForwardedPrefixMiddleware)
    return app


def app_factory(**_: Any) -> FastAPI:
    return create_app()
