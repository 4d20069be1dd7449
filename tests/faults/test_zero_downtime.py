"""Redeploys under load through the router: not one request may fail."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]

CLIENTS = 4
REDEPLOYS = 4


def test_no_failed_requests_during_redeploys(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    url = f"{stack.router_url}/apps/{app_id}/"
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def record(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    def load_keepalive() -> None:
        # Keep-alive, as browsers use it. A reload makes the old nginx workers close their idle
        # connections; a request sent at that instant sees the close, and HTTP lets a client
        # retry an idempotent request on a fresh connection (RFC 9110, 9.2.2), as browsers and
        # curl do. Such retries are counted apart; a retry that fails is a failure.
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get(url)
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    record("closed keep-alive connection, retried")
                    try:
                        response = httpx.get(url, timeout=10)
                    except httpx.HTTPError as exc:
                        record(f"error {type(exc).__name__}")
                        continue
                except httpx.HTTPError as exc:
                    record(f"error {type(exc).__name__}")
                    continue
                record(f"{response.status_code} {response.text.strip()}")

    def load_fresh_connections() -> None:
        # One connection per request: nothing may fail, not even once
        while not stop.is_set():
            try:
                response = httpx.get(url, timeout=10, headers={"Connection": "close"})
            except httpx.HTTPError as exc:
                record(f"error {type(exc).__name__}")
                continue
            record(f"{response.status_code} {response.text.strip()}")

    threads = [
        threading.Thread(target=load_keepalive if i % 2 else load_fresh_connections)
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    try:
        for index in range(REDEPLOYS):
            image = HELLO_V2 if index % 2 == 0 else HELLO_V1
            assert api.patch(f"/apps/{app_id}", json={"image": image}).status_code == 200
            assert deploy(api, app_id)["status"] == "succeeded"
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)

    served = {k: v for k, v in outcomes.items() if k.startswith("200 ")}
    failed = {k: v for k, v in outcomes.items() if not k.startswith("200 ") and "retried" not in k}
    print(f"\nrequests during {REDEPLOYS} redeploys: {dict(outcomes)}")
    assert set(served) == {"200 hello from v1", "200 hello from v2"}
    assert sum(served.values()) > 100
    assert failed == {}
