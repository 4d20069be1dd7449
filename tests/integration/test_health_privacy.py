"""Health answers say what is down to anyone, and why only to an admin."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from minipaas import queue
from minipaas.api.app import create_app
from minipaas.config import get_settings
from minipaas.db import session
from tests.support.stack import Stack
from tests.support.users import new_member

pytestmark = [pytest.mark.docker]

# No token, a wrong one, another scheme: all anonymous, none a 401
ANONYMOUS = [{}, {"Authorization": "Bearer mp_not-a-token"}, {"Authorization": "Basic eDp5"}]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connections are refused


@pytest.fixture
def redis_down(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    port = _closed_port()
    monkeypatch.setattr(get_settings(), "redis_port", port)
    queue.get_redis.cache_clear()
    yield port
    monkeypatch.undo()
    queue.get_redis.cache_clear()


@pytest.fixture
def postgres_down(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    port = _closed_port()
    monkeypatch.setattr(get_settings(), "postgres_port", port)
    session.forget_engines()
    yield port
    monkeypatch.undo()
    session.forget_engines()


def test_healthy_answers_have_no_room_for_internals(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        for headers in ANONYMOUS:
            assert client.get("/health/db", headers=headers).json() == {
                "status": "ok",
                "database": "ok",
            }
            ready = client.get("/health/ready", headers=headers)
            assert ready.status_code == 200, ready.text
            assert ready.json() == {
                "status": "ready",
                "checks": {"database": "ok", "redis": "ok", "docker": "ok", "router": "ok"},
            }


def test_a_failing_check_is_named_to_anyone_and_explained_only_to_an_admin(
    stack: Stack, api: httpx.Client, redis_down: int
) -> None:
    member = new_member(api)
    with TestClient(create_app()) as client:
        for headers in ANONYMOUS:
            ready = client.get("/health/ready", headers=headers)
            assert ready.status_code == 503, ready.text
            # the exact shape: no detail, so no host, port or exception text
            assert ready.json() == {
                "status": "unavailable",
                "checks": {
                    "database": "ok",
                    "redis": "unavailable",
                    "docker": "ok",
                    "router": "ok",
                },
            }
            assert str(redis_down) not in ready.text
        # a member's valid token shows no more than no token
        as_member = client.get("/health/ready", headers=member.headers)
        assert as_member.status_code == 503 and "detail" not in as_member.json()

        as_admin = client.get("/health/ready", headers=stack.admin_headers)
        assert as_admin.status_code == 503
        body = as_admin.json()
        assert body["checks"]["redis"] == "unavailable"
        assert str(redis_down) in body["detail"]
        assert set(body["reasons"]) == {"redis"}


def test_database_down_shows_no_address_and_a_token_does_not_break_it(
    stack: Stack, postgres_down: int
) -> None:
    with TestClient(create_app()) as client:
        # the admin's token cannot be checked without the database: anonymous, not a 500
        for headers in [*ANONYMOUS, stack.admin_headers]:
            for path in ("/health/db", "/db-health"):
                answer = client.get(path, headers=headers)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json() == {"status": "unavailable", "database": "unavailable"}
                assert str(postgres_down) not in answer.text
                assert stack.settings.postgres_user not in answer.text
            ready = client.get("/health/ready", headers=headers)
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "unavailable"
            assert "detail" not in ready.json() and str(postgres_down) not in ready.text
