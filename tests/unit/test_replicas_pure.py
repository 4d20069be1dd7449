"""Pure pieces of replicas: a route's backend list, quota arithmetic, merged log order."""

from __future__ import annotations

import pytest

from minipaas.router.route import MAX_BACKENDS, Route, RouteKind
from minipaas.services.logs import _labeled, _sort_key
from minipaas.services.quotas import Limits


def test_a_route_lists_its_backends_and_round_trips_through_json() -> None:
    route = Route(1, "web", RouteKind.PROXY, 4001, ("web.apps.localhost",), (4002, 4003))
    assert route.ports == (4001, 4002, 4003)
    data = route.to_json()
    assert data["port"] == 4001 and data["ports"] == [4001, 4002, 4003]
    assert Route.from_json(data) == route
    # one backend: the JSON a one-container app always had
    single = Route(1, "web", RouteKind.PROXY, 4001)
    assert "ports" not in single.to_json() and single.ports == (4001,)


def test_a_stopped_route_has_no_backends() -> None:
    assert Route(1, "web", RouteKind.STOPPED, 4001, (), (4002,)).ports == ()


@pytest.mark.parametrize(
    ("more", "problem"),
    [
        ((4001,), "once"),
        ((0,), "between"),
        (("4002",), "between"),
        (tuple(range(5000, 5000 + MAX_BACKENDS)), "at most"),
    ],
)
def test_bad_backend_lists_are_refused(more: tuple[int, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Route(1, "web", RouteKind.PROXY, 4001, (), more)


def test_json_whose_ports_do_not_start_with_port_is_refused() -> None:
    with pytest.raises(ValueError, match="start with port"):
        Route.from_json({"id": 1, "kind": "proxy", "name": "web", "port": 1, "ports": [2, 1]})


def test_limits_times_replicas() -> None:
    assert Limits(256, 0.5, 100).times(3) == Limits(768, 1.5, 300)


def test_log_stamps_sort_as_time_whatever_docker_trimmed() -> None:
    # Docker drops trailing zeros of the fraction: .5 is later than .123456789
    early, late = "2026-11-27T18:00:00.123456789Z", "2026-11-27T18:00:00.5Z"
    assert _sort_key(early) < _sort_key(late)
    assert _labeled("r1", late, "hi\n", timestamps=True) == f"{late} [r1] hi\n"
    assert _labeled("", late, "hi\n", timestamps=False) == "hi\n"
