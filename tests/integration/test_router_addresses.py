"""Backends are node address + port (Docker Swarm runs replicas on other nodes), against a real
nginx: traffic goes to the address in the route, down marks and in-flight counts are kept per
address:port (the same port on two nodes is two backends), bad addresses never get in, and a
route stored before addresses existed still routes. All of 127.0.0.0/8 is loopback on Linux:
the "other node" here is 127.0.0.2. No Docker needed."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from minipaas.db.models import App as AppRow
from minipaas.router.control import ControlClient, load_or_create_secret
from minipaas.router.lua_router import Backend, RouteKind, RouterError
from minipaas.runtime.base import Endpoint
from minipaas.services import routing
from minipaas.services.probe import answers, http_status
from minipaas.services.routing import replica_backends
from tests.integration.test_lua_router import App, Rig, _AppHandler, empty_table, rig
from tests.integration.test_router_balancing import balanced_route
from tests.support.stack import free_port

__all__ = ["empty_table", "rig"]  # fixtures, shared with the one-backend tests

OTHER_NODE = "127.0.0.2"


def serve_at(name: str, address: str, port: int = 0) -> App:
    server = http.server.ThreadingHTTPServer((address, port), _AppHandler)
    server.daemon_threads = True
    server.app_name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return App(name, server.server_address[1], server)


@pytest.fixture
def same_port_on_two_nodes() -> Iterator[tuple[App, App]]:
    """`near` on 127.0.0.1:P and `far` on 127.0.0.2:P: one port, two backends."""
    for _attempt in range(20):
        far = serve_at("far", OTHER_NODE)
        try:
            near = serve_at("near", "127.0.0.1", far.port)
            break
        except OSError:  # the port was free on 127.0.0.2 but not on 127.0.0.1 (seen in CI)
            far.server.shutdown()
            far.server.server_close()
    else:
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2 in 20 tries")
    try:
        yield near, far
    finally:
        for app in (near, far):
            app.server.shutdown()
            app.server.server_close()


def control(rig: Rig) -> ControlClient:
    secret = load_or_create_secret(rig.settings)
    return ControlClient(rig.settings.router_control_socket, secret, timeout=5)


def answered_by(rig: Rig, host: str | None = "web.apps.localhost", path: str = "/") -> str:
    response = rig.get(path, host)
    assert response.status_code == 200, response.text
    return str(response.json()["app"])


def test_traffic_goes_to_the_address_in_the_route(
    rig: Rig, same_port_on_two_nodes: tuple[App, App]
) -> None:
    near, far = same_port_on_two_nodes
    route = rig.router.route(
        app_id=1, app_name="web", kind=RouteKind.PROXY, port=far.port, address=OTHER_NODE
    )
    rig.router.set_route(route)
    assert rig.router.live_table()[1].backends == (Backend(OTHER_NODE, far.port),)
    assert answered_by(rig) == "far"
    assert answered_by(rig, host=None, path="/apps/1/") == "far"  # by path too
    # The same port on loopback is another backend
    rig.router.set_route(
        rig.router.route(app_id=1, app_name="web", kind=RouteKind.PROXY, port=near.port)
    )
    assert answered_by(rig) == "near"


def test_requests_are_spread_over_two_nodes_with_the_same_port(
    rig: Rig, same_port_on_two_nodes: tuple[App, App]
) -> None:
    near, far = same_port_on_two_nodes
    route = balanced_route(rig, 1, [near.port, far.port], addresses=["127.0.0.1", OTHER_NODE])
    rig.router.set_route(route)
    with httpx.Client(base_url=rig.settings.router_probe_url, timeout=10) as client:
        seen = Counter(
            client.get("/", headers={"Host": "web.apps.localhost"}).json()["app"] for _ in range(10)
        )
    assert seen == {"near": 5, "far": 5}


def test_a_down_mark_is_kept_per_address_and_port(rig: Rig) -> None:
    port = free_port()
    near = serve_at("near", "127.0.0.1", port)  # up on 127.0.0.1:P; nothing on 127.0.0.2:P
    other = serve_at("other", "127.0.0.1")
    try:
        # App 1's backend on 127.0.0.2:P refuses connections: it is marked down
        rig.router.set_route(
            balanced_route(rig, 1, [port, other.port], addresses=[OTHER_NODE, "127.0.0.1"])
        )
        with httpx.Client(base_url=rig.settings.router_probe_url, timeout=10) as client:
            for _ in range(4):
                got = client.get("/", headers={"Host": "web.apps.localhost"})
                assert got.json()["app"] == "other"  # retried on the live one
            # Within the mark's 3 s: app 2's backend on 127.0.0.1:P is not taken for down
            rig.router.set_route(balanced_route(rig, 2, [port, other.port]))
            seen = Counter(
                client.get("/", headers={"Host": "web2.apps.localhost"}).json()["app"]
                for _ in range(10)
            )
        assert seen == {"near": 5, "other": 5}
    finally:
        for app in (near, other):
            app.server.shutdown()
            app.server.server_close()


class _SlowHandler(_AppHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        self.release.wait(10)
        super().do_GET()


def test_in_flight_requests_are_counted_per_address_and_port(rig: Rig) -> None:
    slow = http.server.ThreadingHTTPServer((OTHER_NODE, 0), _SlowHandler)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    port = slow.server_address[1]
    near = serve_at("near", "127.0.0.1", port)
    _SlowHandler.release.clear()
    results: list[int] = []
    try:
        rig.router.set_route(balanced_route(rig, 1, [port], addresses=[OTHER_NODE]))
        rig.router.set_route(balanced_route(rig, 2, [port]))

        def call() -> None:
            with httpx.Client(base_url=rig.settings.router_probe_url, timeout=15) as client:
                results.append(client.get("/", headers={"Host": "web.apps.localhost"}).status_code)

        waiting = threading.Thread(target=call)
        waiting.start()
        deadline = time.monotonic() + 5
        while rig.router.in_flight(Backend(OTHER_NODE, port)) == 0:
            assert time.monotonic() < deadline, "the request never showed as in flight"
            time.sleep(0.01)
        # The same port on loopback carries nothing, though app 2 answers there meanwhile
        assert rig.get("/", "web2.apps.localhost").json()["app"] == "near"
        assert rig.router.in_flight(Backend("127.0.0.1", port)) == 0
        assert rig.router.in_flight(Backend(OTHER_NODE, port)) == 1
        _SlowHandler.release.set()
        waiting.join(15)
        assert results == [200]
        assert rig.router.in_flight(Backend(OTHER_NODE, port)) == 0
    finally:
        _SlowHandler.release.set()
        slow.shutdown()
        slow.server_close()
        near.server.shutdown()
        near.server.server_close()


BAD_ADDRESSES = [
    "",
    "127.0.0.1:80",
    "10.0.0.1/24",
    "10.0.0.1/x",
    "http://10.0.0.1",
    "256.0.0.1",
    "1.2.3",
    "01.2.3.4",
    "::1",
    "[::1]",
    "Node.Example",
    "node example",
    "node;return",
    "-node.example",
    "node..example",
    "a" * 64 + ".example",
    "node\n.example",
    7,
    ["127.0.0.1"],
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_the_router_refuses_a_bad_address(rig: Rig, address: Any) -> None:
    client = control(rig)
    single = {"id": 1, "kind": "proxy", "name": "web", "port": 4001, "address": address}
    with pytest.raises(RouterError, match="address"):
        client.request("PUT", "/apps/1", single)
    backends = [{"address": "127.0.0.1", "port": 4001}, {"address": address, "port": 4002}]
    many = {"id": 1, "kind": "proxy", "name": "web", "port": 4001, "backends": backends}
    with pytest.raises(RouterError, match="address"):
        client.request("PUT", "/apps/1", many)
    with pytest.raises(RouterError, match="address"):
        client.request("PUT", "/apps", {"routes": [single]})
    assert rig.router.live_table() == {}
    # and the Python side refuses the same before anything is sent
    with pytest.raises(ValueError, match="address"):
        Backend(address, 4001)


@pytest.mark.parametrize("target", ["127.0.0.1:80:80", "a/b:80", "Node:80", "10.0.0.1:0", "x"])
def test_the_in_flight_endpoint_refuses_a_bad_backend(rig: Rig, target: str) -> None:
    with pytest.raises(RouterError, match="address"):
        control(rig).request("GET", f"/inflight/{target}")


def test_a_host_name_address_is_taken_as_it_is(rig: Rig) -> None:
    route = rig.router.route(
        app_id=1, app_name="web", kind=RouteKind.PROXY, port=4001, address="node-1.swarm.test"
    )
    rig.router.set_route(route)
    assert rig.router.live_table() == {1: route}
    assert route.to_json()["address"] == "node-1.swarm.test"


def test_a_route_stored_before_node_addresses_still_routes(rig: Rig) -> None:
    # The snapshot a previous version left: `ports`, no addresses (all on loopback)
    ports = [rig.blue.port, rig.green.port]
    old = {"id": 1, "kind": "proxy", "name": "web", "port": ports[0], "ports": ports}
    old["hosts"] = ["web.apps.localhost"]
    rig.router.stop()
    snapshot = rig.router.snapshot
    snapshot.snapshot_file.write_text(json.dumps({"op": "set", "route": old}) + "\n")
    snapshot.journal_file.write_text("")
    rig.router.ensure_running()

    live = rig.router.live_table()
    assert live[1].backends == tuple(Backend("127.0.0.1", port) for port in ports)
    assert snapshot.load()[1] == live[1]
    with httpx.Client(base_url=rig.settings.router_probe_url, timeout=10) as client:
        seen = {
            client.get("/", headers={"Host": "web.apps.localhost"}).json()["app"] for _ in range(4)
        }
    assert seen == {"blue", "green"}
    # The old control form is taken too (a platform process not yet restarted)
    control(rig).request("PUT", "/apps/1", old)
    assert rig.router.live_table()[1] == live[1]


def test_probes_connect_to_the_replicas_address_only(
    same_port_on_two_nodes: tuple[App, App],
) -> None:
    near, far = same_port_on_two_nodes
    near.server.shutdown()  # the same port on loopback: nothing answers there now
    near.server.server_close()
    assert http_status(Endpoint(OTHER_NODE, far.port)) == 200
    assert answers(Endpoint(OTHER_NODE, far.port), path="/health", timeout=2)
    assert http_status(Endpoint("127.0.0.1", far.port), timeout=1) is None


def test_rows_with_node_addresses_become_backends_nginx_reaches(
    rig: Rig, same_port_on_two_nodes: tuple[App, App]
) -> None:
    """What services/routing.py makes of an app's rows: replica 0 on 127.0.0.2:P, replica 1
    on 127.0.0.1:P (NULL address, a row from before node addresses)."""
    near, far = same_port_on_two_nodes

    def row(address: str | None) -> SimpleNamespace:
        return SimpleNamespace(
            published_port=far.port, published_address=address, unhealthy_since=None
        )

    app = row(OTHER_NODE)
    app.extra_replicas = [row(None)]
    backends = replica_backends(cast(AppRow, app))
    assert backends == [Backend(OTHER_NODE, far.port), Backend("127.0.0.1", near.port)]
    route = rig.router.route(
        app_id=1,
        app_name="web",
        kind=RouteKind.PROXY,
        port=backends[0].port,
        address=backends[0].address,
        more_backends=backends[1:],
    )
    rig.router.set_route(route)
    with httpx.Client(base_url=rig.settings.router_probe_url, timeout=10) as client:
        seen = Counter(
            client.get("/", headers={"Host": "web.apps.localhost"}).json()["app"] for _ in range(4)
        )
    assert seen == {"far": 2, "near": 2}


def test_a_drain_waits_for_the_requests_of_its_own_address_and_port(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # services/routing.py's drain, against this test's nginx
    monkeypatch.setattr(routing, "get_router", lambda: rig.router)
    slow = http.server.ThreadingHTTPServer((OTHER_NODE, 0), _SlowHandler)
    slow.daemon_threads = True
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    port = slow.server_address[1]
    _SlowHandler.release.clear()
    results: list[int] = []
    try:
        rig.router.set_route(balanced_route(rig, 1, [port], addresses=[OTHER_NODE]))

        def call() -> None:
            with httpx.Client(base_url=rig.settings.router_probe_url, timeout=15) as client:
                results.append(client.get("/", headers={"Host": "web.apps.localhost"}).status_code)

        waiting = threading.Thread(target=call)
        waiting.start()
        deadline = time.monotonic() + 5
        while rig.router.in_flight(Backend(OTHER_NODE, port)) == 0:
            assert time.monotonic() < deadline, "the request never showed as in flight"
            time.sleep(0.01)
        started = time.monotonic()
        assert routing.drain(Endpoint("127.0.0.1", port), timeout=2) == 0  # not its requests
        assert time.monotonic() - started < 0.5
        assert routing.drain(Endpoint(OTHER_NODE, port), timeout=0.3) == 1  # still open
        threading.Timer(0.5, _SlowHandler.release.set).start()
        started = time.monotonic()
        assert routing.drain(Endpoint(OTHER_NODE, port), timeout=5) == 0
        assert time.monotonic() - started >= 0.3  # it did wait for the request to end
        waiting.join(15)
        assert results == [200]
    finally:
        _SlowHandler.release.set()
        slow.shutdown()
        slow.server_close()
