"""A wrong internal_port fails in seconds with the port the app does listen on, and repeated
progress lines are one line with a count."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1, SLOW_STARTER

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def test_a_wrong_internal_port_fails_fast_and_names_the_right_one(
    api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1, internal_port=8080)["id"]
    began = time.monotonic()
    result = deploy(api, app_id)
    took = time.monotonic() - began
    assert result["status"] == "failed"
    assert "nothing listens on internal_port 8080" in result["error"], result["error"]
    assert "port 80" in result["error"]
    # READY_TIMEOUT_SECONDS is 20 in the tests (60 by default): this is the fast path
    assert took < 15, took


def test_repeated_waiting_lines_are_collapsed(api: httpx.Client, app_name: str) -> None:
    # The slow starter listens only after a few seconds: many identical probes meanwhile
    app_id = create_app(api, app_name, SLOW_STARTER)["id"]
    result = deploy(api, app_id)
    assert result["status"] == "succeeded", result["error"]
    events = api.get(f"/apps/{app_id}/deployments/{result['id']}/events").json()
    waiting = [e["message"] for e in events if e["kind"] == "health"]
    assert len(waiting) == len(set(waiting)) or any("(x" in m for m in waiting), waiting
    plain = [m for m in waiting if m == "waiting for health: no HTTP answer"]
    assert len(plain) <= 1, waiting
