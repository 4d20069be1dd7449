"""The prober's pure policy: which replicas leave the route, come back, or are killed; and
the route's ports leaving out the ones that failed their probes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from minipaas.db.models import App
from minipaas.services.replica_health import HUNG_RESTART_SECONDS, Probed, Streak, decide
from minipaas.services.routing import replica_ports

AT = datetime(2026, 11, 27, 19, 0, tzinfo=UTC)


def replica(n: int, *, fails: int = 0, passes: int = 0, out_for: float | None = None) -> Any:
    out_since = None if out_for is None else AT - timedelta(seconds=out_for)
    probed = Probed(n, f"c{n}", 4000 + n, out_since)
    return probed, Streak(f"c{n}", 4000 + n, fails=fails, passes=passes)


def test_a_streak_counts_results_in_a_row() -> None:
    streak = Streak("c", 1)
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


def app_with(first: tuple[int | None, bool], *others: tuple[int | None, bool]) -> App:
    def row(port: int | None, out: bool) -> SimpleNamespace:
        return SimpleNamespace(published_port=port, unhealthy_since=AT if out else None)

    first_row = row(*first)
    first_row.extra_replicas = [row(*other) for other in others]
    return cast(App, first_row)


def test_the_route_leaves_out_replicas_that_failed_their_probes() -> None:
    assert replica_ports(app_with((4000, False), (4001, True), (4002, False))) == [4000, 4002]
    assert replica_ports(app_with((4000, True), (4001, False), (None, False))) == [4001]
    # None healthy (a crash raced with the probes): every running one rather than none
    assert replica_ports(app_with((4000, True), (4001, True), (None, False))) == [4000, 4001]
    assert replica_ports(app_with((None, False), (None, False))) == []
