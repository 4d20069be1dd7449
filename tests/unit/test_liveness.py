"""GET /health is answered before FastAPI's middleware and routing (api.app.PlatformAPI): the
answer must be the route's own, and the request must be tagged, counted and logged like any
other."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from minipaas.api.app import create_app
from minipaas.metrics import HTTP_REQUESTS


def _counted(route: str, status: str) -> float:
    return float(HTTP_REQUESTS.labels("GET", route, status)._value.get())


@pytest.fixture
def app() -> FastAPI:
    return create_app()


def test_the_early_answer_is_the_routes_answer(app: FastAPI) -> None:
    async def through_the_framework(scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    early = TestClient(app).get("/health")
    assert app.middleware_stack is None  # built on the first request the framework handles
    routed = TestClient(through_the_framework).get("/health")
    assert early.status_code == routed.status_code == 200
    assert early.content == routed.content == b'{"status":"ok"}'
    for header in ("content-type", "content-length"):
        assert early.headers[header] == routed.headers[header]
    assert set(early.headers) == set(routed.headers)


def test_the_early_answer_is_tagged_counted_and_logged(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    before = _counted("/health", "200")
    with caplog.at_level(logging.INFO, logger="minipaas.access"):
        answer = TestClient(app).get("/health?probe=1", headers={"X-Request-ID": "probe-7"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "probe-7"
    assert _counted("/health", "200") == before + 1
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == "probe-7"]
    assert len(lines) == 1
    line = lines[0]
    assert (line.getMessage(), line.route, line.path, line.status) == (  # type: ignore[attr-defined]
        "GET /health 200",
        "/health",
        "/health",
        200,
    )


def test_other_methods_and_paths_still_go_through_the_framework(app: FastAPI) -> None:
    client = TestClient(app, follow_redirects=False)
    head = client.head("/health")
    assert head.status_code == 405  # the route is GET only, as before
    assert client.get("/health/").status_code == 307  # to /health, as before
    assert client.post("/health").status_code == 405
