"""An app with several backends (replicas) in the reload-free router, against a real nginx:
requests spread over them, a backend that refuses connections is skipped and its requests
retried on another, the table keeps the list exactly. No Docker needed."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from minipaas.router.control import ControlClient, load_or_create_secret
from minipaas.router.lua_router import Backend, Route, RouteKind, RouterError
from tests.integration.test_lua_router import Rig, _serve, empty_table, rig
from tests.support.stack import free_port

__all__ = ["empty_table", "rig"]  # fixtures, shared with the one-backend tests


def balanced_route(
    rig: Rig, app_id: int, ports: list[int], *, addresses: list[str] | None = None
) -> Route:
    """A route to `ports`, each at the matching address of `addresses` (default loopback)."""
    backends = [
        Backend(address, port)
        for address, port in zip(addresses or ["127.0.0.1"] * len(ports), ports, strict=True)
    ]
    return rig.router.route(
        app_id=app_id,
        app_name="web" if app_id == 1 else f"web{app_id}",
        kind=RouteKind.PROXY,
        port=backends[0].port,
        address=backends[0].address,
        more_backends=backends[1:],
    )


def test_requests_are_spread_over_every_backend(rig: Rig) -> None:
    third = _serve("third")
    try:
        ports = [rig.blue.port, rig.green.port, third.port]
        rig.router.set_route(balanced_route(rig, 1, ports))
        # One keep-alive connection: one nginx worker, so its round robin shows exactly
        with httpx.Client(base_url=rig.settings.router_probe_url, timeout=10) as client:
            seen = Counter(
                client.get("/", headers={"Host": "web.apps.localhost"}).json()["app"]
                for _ in range(30)
            )
        print(f"\n30 requests over 3 backends: {dict(seen)}")
        assert seen == {"blue": 10, "green": 10, "third": 10}
    finally:
        third.server.shutdown()


def test_the_table_keeps_every_backend_and_one_backend_routes_stay_as_they_were(
    rig: Rig,
) -> None:
    many = balanced_route(rig, 1, [rig.blue.port, rig.green.port])
    one = rig.route(2, "solo", rig.blue)
    rig.router.replace_all([many, one])
    live = rig.router.live_table()
    assert live[1] == many
    assert [b.port for b in live[1].backends] == [rig.blue.port, rig.green.port]
    assert live[2] == one and "backends" not in one.to_json()
    # nginx restarts from its snapshot with the same lists
    rig.router.stop()
    rig.router.ensure_running()
    assert rig.router.live_table() == {1: many, 2: one}


@pytest.mark.parametrize(
    ("backends", "problem"),
    [
        ([("127.0.0.1", 4002), ("127.0.0.1", 4001)], "start with"),
        ([("127.0.0.1", 4001), ("127.0.0.1", 4001)], "distinct"),
        ([("127.0.0.1", 4001), ("127.0.0.1", 0)], "port between"),
        ("4001", "list"),
        ([4001, 4002], "address, port"),
    ],
)
def test_the_router_refuses_a_bad_backend_list(rig: Rig, backends: object, problem: str) -> None:
    client = ControlClient(
        rig.settings.router_control_socket, load_or_create_secret(rig.settings), timeout=5
    )
    if isinstance(backends, list) and isinstance(backends[0], tuple):
        backends = [{"address": address, "port": port} for address, port in backends]
    body = {"id": 1, "kind": "proxy", "name": "web", "port": 4001, "backends": backends}
    with pytest.raises(RouterError, match=problem):
        client.request("PUT", "/apps/1", body)


@pytest.mark.parametrize(
    ("ports", "problem"),
    [([4002, 4001], "start with"), ([4001, 4001], "distinct"), ("4001", "list")],
)
def test_the_router_checks_a_backend_list_of_the_old_form_too(
    rig: Rig, ports: object, problem: str
) -> None:
    client = ControlClient(
        rig.settings.router_control_socket, load_or_create_secret(rig.settings), timeout=5
    )
    body = {"id": 1, "kind": "proxy", "name": "web", "port": 4001, "ports": ports}
    with pytest.raises(RouterError, match=problem):
        client.request("PUT", "/apps/1", body)


def test_a_dead_backend_is_skipped_and_its_requests_retried(rig: Rig) -> None:
    dead = free_port()  # nothing listens: connections are refused, as a killed replica's
    rig.router.set_route(balanced_route(rig, 1, [rig.blue.port, dead, rig.green.port]))
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    with httpx.Client(base_url=rig.settings.router_probe_url, timeout=10) as client:
        for index in range(60):
            method = "POST" if index % 3 == 0 else "GET"
            response = client.request(method, "/", headers={"Host": "web.apps.localhost"})
            outcomes[f"{method} {response.status_code}"] += 1
    elapsed = time.monotonic() - started
    print(f"\n60 requests, one of 3 backends refusing: {dict(outcomes)} in {elapsed:.2f} s")
    # A refused connection never reached the app: nginx retries it, POST included
    assert outcomes == {"GET 200": 40, "POST 200": 20}
