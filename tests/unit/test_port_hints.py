"""What a deploy says when the app listens elsewhere than internal_port."""

from __future__ import annotations

from minipaas.runtime.listening import Listener
from minipaas.services.deployments.port_hints import _reason


def test_an_app_on_another_port_is_named() -> None:
    reason = _reason([Listener("0.0.0.0", 8080)], 80, {8080})
    assert reason is not None
    assert "internal_port 80" in reason and "port 8080" in reason and "EXPOSE" in reason


def test_an_app_on_loopback_only_is_told_to_listen_on_all_addresses() -> None:
    reason = _reason([Listener("127.0.0.1", 80)], 80, set())
    assert reason is not None and "0.0.0.0:80" in reason


def test_still_starting_or_listening_right_gives_no_reason() -> None:
    assert _reason([], 80, {8080}) is None
    assert _reason([Listener("::", 80), Listener("0.0.0.0", 9000)], 80, set()) is None
    assert _reason([Listener("127.0.0.1", 9000)], 80, set()) is None
