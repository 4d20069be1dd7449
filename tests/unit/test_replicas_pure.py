"""Pure pieces of replicas: a route's backend list, quota arithmetic, merged log order."""

from __future__ import annotations

from typing import Any

import pytest

from minipaas.router.route import MAX_BACKENDS, Backend, Route, RouteKind
from minipaas.services.logs import _labeled, _sort_key
from minipaas.services.quotas import Limits


def test_a_route_lists_its_backends_and_round_trips_through_json() -> None:
    more = (Backend("127.0.0.1", 4002), Backend("10.0.0.7", 4001))
    route = Route(1, "web", RouteKind.PROXY, 4001, ("web.apps.localhost",), more)
    assert route.backends == (Backend("127.0.0.1", 4001), *more)
    data = route.to_json()
    assert data["port"] == 4001 and "address" not in data  # loopback: as it always was
    assert data["backends"] == [
        {"address": "127.0.0.1", "port": 4001},
        {"address": "127.0.0.1", "port": 4002},
        {"address": "10.0.0.7", "port": 4001},
    ]
    assert Route.from_json(data) == route
    # one backend: the JSON a one-container app always had, plus its node when not loopback
    single = Route(1, "web", RouteKind.PROXY, 4001)
    assert "backends" not in single.to_json() and single.backends == (Backend("127.0.0.1", 4001),)
    remote = Route(1, "web", RouteKind.PROXY, 4001, address="10.0.0.7")
    assert remote.to_json() == {
        "id": 1,
        "kind": "proxy",
        "name": "web",
        "port": 4001,
        "address": "10.0.0.7",
    }
    assert Route.from_json(remote.to_json()) == remote


def test_a_route_stored_before_node_addresses_is_read_as_loopback() -> None:
    # A snapshot line written by the previous version: `ports`, no addresses
    old = {"id": 1, "kind": "proxy", "name": "web", "port": 4001, "ports": [4001, 4002]}
    route = Route.from_json(old)
    assert route.backends == (Backend("127.0.0.1", 4001), Backend("127.0.0.1", 4002))


def test_a_stopped_route_has_no_backends() -> None:
    stopped = Route(
        1, "web", RouteKind.STOPPED, 4001, (), (Backend("127.0.0.1", 4002),), "10.0.0.7"
    )
    assert stopped.backends == () and stopped.to_json() == {
        "id": 1,
        "kind": "stopped",
        "name": "web",
    }


@pytest.mark.parametrize(
    ("more", "problem"),
    [
        ((Backend("127.0.0.1", 4001),), "once"),
        ((4002,), "Backend values"),
        (tuple(Backend("127.0.0.1", p) for p in range(5000, 5000 + MAX_BACKENDS)), "at most"),
    ],
)
def test_bad_backend_lists_are_refused(more: tuple[Any, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Route(1, "web", RouteKind.PROXY, 4001, (), more)


def test_the_same_port_on_two_nodes_is_two_backends() -> None:
    route = Route(1, "web", RouteKind.PROXY, 4001, (), (Backend("127.0.0.2", 4001),))
    assert len(route.backends) == 2


@pytest.mark.parametrize(
    "address",
    [
        "",
        "127.0.0.1:80",
        "10.0.0.1/32",
        "http://10.0.0.1",
        "256.0.0.1",
        "1.2.3",
        "01.2.3.4",
        "::1",
        "Node.Example",
        "node example",
        "node;drop",
        "-node.example",
        "a" * 64 + ".example",
        "node\n.example",
        7,
        None,
    ],
)
def test_bad_backend_addresses_are_refused(address: Any) -> None:
    with pytest.raises(ValueError, match="address"):
        Backend(address, 4001)
    with pytest.raises(ValueError, match="address"):
        Route(1, "web", RouteKind.PROXY, 4001, address=address)
    if address is not None:  # JSON null is no address: loopback, as Lua reads it
        data = {"id": 1, "kind": "proxy", "name": "web", "port": 4001, "address": address}
        with pytest.raises(ValueError, match="address"):
            Route.from_json(data)


@pytest.mark.parametrize("address", ["10.0.0.7", "0.0.0.0", "255.255.255.255", "node-1.swarm"])
def test_good_backend_addresses_are_taken(address: str) -> None:
    assert Backend(address, 1).address == address


def test_json_whose_backends_do_not_start_with_port_is_refused() -> None:
    with pytest.raises(ValueError, match="start with"):
        Route.from_json({"id": 1, "kind": "proxy", "name": "web", "port": 1, "ports": [2, 1]})
    backends = [{"address": "10.0.0.7", "port": 1}]
    with pytest.raises(ValueError, match="start with"):
        Route.from_json({"id": 1, "kind": "proxy", "name": "web", "port": 1, "backends": backends})


def test_limits_times_replicas() -> None:
    assert Limits(256, 0.5, 100).times(3) == Limits(768, 1.5, 300)


def test_log_stamps_sort_as_time_whatever_docker_trimmed() -> None:
    # Docker drops trailing zeros of the fraction: .5 is later than .123456789
    early, late = "2026-11-27T18:00:00.123456789Z", "2026-11-27T18:00:00.5Z"
    assert _sort_key(early) < _sort_key(late)
    assert _labeled("r1", late, "hi\n", timestamps=True) == f"{late} [r1] hi\n"
    assert _labeled("", late, "hi\n", timestamps=False) == "hi\n"
