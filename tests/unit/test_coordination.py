"""Turns and leases when Redis hangs: background loops ask several times a second, so an
answer that never comes costs them a moment, and they go on as if they had the turn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from minipaas import queue
from minipaas.config import get_settings


@pytest.fixture
def hung_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A listener that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(listener.getsockname()[1]))
    get_settings.cache_clear()
    try:
        yield
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
        get_settings.cache_clear()


def test_a_hung_redis_costs_a_turn_or_a_lease_half_a_second(hung_redis: None) -> None:
    for ask in (lambda: queue.claim_turn("healer", 0.5), lambda: queue.hold_lease("p", 5)):
        began = time.monotonic()
        assert ask() is True  # without Redis the caller goes on: what they guard is repeatable
        assert time.monotonic() - began < 2, "a hung Redis held the loop"
