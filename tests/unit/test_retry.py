from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors
from sqlalchemy.exc import OperationalError, ProgrammingError

from minipaas.db.session import database_unavailable, outage_detail
from minipaas.runtime import EngineUnavailable, ImageUnavailable
from minipaas.services.retry import retry_database, retry_transient


def test_engine_outages_are_retried_with_the_given_delays() -> None:
    calls: list[str] = []
    slept: list[float] = []

    def work() -> str:
        calls.append("try")
        if len(calls) < 3:
            raise EngineUnavailable("Docker engine is not reachable")
        return "started"

    assert retry_transient(work, delays=(1.0, 3.0, 6.0), sleep=slept.append) == "started"
    assert len(calls) == 3 and slept == [1.0, 3.0]


def test_gives_up_after_the_last_delay_and_says_so() -> None:
    slept: list[float] = []

    def work() -> None:
        raise EngineUnavailable("Docker engine is not reachable")

    with pytest.raises(EngineUnavailable, match="gave up after 3 attempts"):
        retry_transient(work, delays=(1.0, 2.0), sleep=slept.append)
    assert slept == [1.0, 2.0]


def test_deterministic_failures_are_not_retried() -> None:
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise ImageUnavailable("image 'x' is not present")

    with pytest.raises(ImageUnavailable):
        retry_transient(work, delays=(1.0,), sleep=lambda _: None)
    assert calls == [1]


def _db_error(orig: Exception) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig)


GONE = _db_error(psycopg.OperationalError("connection refused"))


def test_a_database_that_went_away_is_told_from_one_that_refused_a_query() -> None:
    assert database_unavailable(GONE)
    assert database_unavailable(_db_error(pg_errors.AdminShutdown("terminating connection")))
    assert not database_unavailable(_db_error(pg_errors.SerializationFailure("conflict")))
    denied = ProgrammingError("INSERT", {}, pg_errors.InsufficientPrivilege("denied"))
    assert not database_unavailable(denied)
    assert outage_detail(GONE) == "connection refused"
    refused = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "FATAL:  the database system is shutting down\n\tmore"
    )
    assert outage_detail(_db_error(refused)) == "FATAL: the database system is shutting down"


class _FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_database_is_waited_for_with_backoff_until_it_answers() -> None:
    clock = _FakeClock()
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        if len(calls) < 6:
            raise GONE
        return "ended"

    assert retry_database(work, sleep=clock.sleep, clock=lambda: clock.now) == "ended"
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 5.0]


def test_gives_up_on_the_database_after_its_patience() -> None:
    clock = _FakeClock()

    def work() -> None:
        raise GONE

    with pytest.raises(OperationalError):
        retry_database(work, patience=30, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.now <= 30 and clock.slept[-1] == 5.0


def test_queries_the_database_refused_are_not_retried() -> None:
    clock = _FakeClock()

    def work() -> None:
        raise ProgrammingError("INSERT", {}, pg_errors.InsufficientPrivilege("denied"))

    with pytest.raises(ProgrammingError):
        retry_database(work, sleep=clock.sleep, clock=lambda: clock.now)
    assert clock.slept == []
