"""The prober's pure policy: which replicas leave the route, come back, or are killed; and
the route's ports leaving out the ones that failed their probes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from minipaas.db.models import App
from minipaas.router.route import Backend
from minipaas.runtime.base import Endpoint
from minipaas.services.replica_health import HUNG_RESTART_SECONDS, Probed, Streak, decide
from minipaas.services.routing import replica_backends, serving_endpoints

AT = datetime(2026, 11, 27, 19, 0, tzinfo=UTC)


def replica(n: int, *, fails: int = 0, passes: int = 0, out_for: float | None = None) -> Any:
    out_since = None if out_for is None else AT - timedelta(seconds=out_for)
    probed = Probed(n, f"c{n}", Endpoint("127.0.0.1", 4000 + n), out_since)
    return probed, Streak(f"c{n}", probed.endpoint, fails=fails, passes=passes)


def test_a_streak_counts_results_in_a_row() -> None:
    streak = Streak("c", Endpoint("127.0.0.1", 1))
    for ok in (False, False, True):
        streak.count(ok)
    assert (streak.fails, streak.passes) == (0, 1)
    streak.count(False)
    assert (streak.fails, streak.passes) == (1, 0)


def test_two_failed_probes_take_a_replica_out_one_does_not() -> None:
    assert decide([replica(0), replica(1, fails=1), replica(2)], AT).take_out == []
    verdict = decide([replica(0), replica(1, fails=2), replica(2)], AT)
    assert verdict.take_out == [1] and verdict.put_back == [] and verdict.kill == []
    assert not verdict.all_failing


def test_two_good_probes_bring_it_back() -> None:
    assert decide([replica(0), replica(1, passes=1, out_for=5)], AT).put_back == []
    assert decide([replica(0), replica(1, passes=2, out_for=5)], AT).put_back == [1]


def test_the_last_healthy_replica_is_never_taken_out() -> None:
    # Every running replica fails: the route is kept as it is, and that is reported
    verdict = decide([replica(0, fails=2), replica(1, fails=3), replica(2, fails=2)], AT)
    assert verdict.take_out == [] and verdict.kill == [] and verdict.all_failing
    # Two out already, the third fails too: it stays, the hung ones are not killed
    verdict = decide([replica(0, fails=2, out_for=60), replica(1, fails=2)], AT)
    assert verdict.take_out == [] and verdict.kill == [] and verdict.all_failing
    # A one-replica app is only reported
    verdict = decide([replica(0, fails=9)], AT)
    assert not verdict.changes and verdict.all_failing


def test_one_coming_back_lets_another_leave() -> None:
    verdict = decide([replica(0, fails=2), replica(1, passes=2, out_for=3)], AT)
    assert verdict.take_out == [0] and verdict.put_back == [1]


def test_a_replica_hung_past_the_bound_is_killed_while_others_serve() -> None:
    bound = HUNG_RESTART_SECONDS
    assert decide([replica(0), replica(1, fails=5, out_for=bound - 1)], AT).kill == []
    assert decide([replica(0), replica(1, fails=5, out_for=bound)], AT).kill == [1]
    # Answering again (one good probe breaks the streak): not killed
    assert decide([replica(0), replica(1, passes=1, out_for=bound + 5)], AT).kill == []


Row = tuple[int | None, bool] | tuple[int | None, bool, str | None]


def app_with(first: Row, *others: Row) -> App:
    def row(port: int | None, out: bool, address: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(
            published_port=port, published_address=address, unhealthy_since=AT if out else None
        )

    first_row = row(*first)
    first_row.extra_replicas = [row(*other) for other in others]
    return cast(App, first_row)


def ports(app: App) -> list[int]:
    return [endpoint.port for endpoint in serving_endpoints(app)]


def test_the_route_leaves_out_replicas_that_failed_their_probes() -> None:
    assert ports(app_with((4000, False), (4001, True), (4002, False))) == [4000, 4002]
    assert ports(app_with((4000, True), (4001, False), (None, False))) == [4001]
    # None healthy (a crash raced with the probes): every running one rather than none
    assert ports(app_with((4000, True), (4001, True), (None, False))) == [4000, 4001]
    assert ports(app_with((None, False), (None, False))) == []


def test_the_same_port_on_two_nodes_is_two_backends_and_null_is_loopback() -> None:
    app = app_with((4000, False), (4000, False, "127.0.0.2"), (4000, False, "127.0.0.1"))
    assert replica_backends(app) == [Backend("127.0.0.1", 4000), Backend("127.0.0.2", 4000)]


def test_a_replica_whose_address_is_no_ipv4_or_resolvable_name_is_left_out() -> None:
    # "localhost" resolves (to loopback): a node reported by name is looked up, nginx takes IPs
    app = app_with((4000, False), (4001, False, "localhost"), (4002, False, "no-such-node.invalid"))
    assert replica_backends(app) == [Backend("127.0.0.1", 4000), Backend("127.0.0.1", 4001)]
