"""Pools close connections that waited in them too long (db/pools.py), on a real PostgreSQL:
what a burst opened goes once load stops needing it, and what came back recently stays,
however long it was in use before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Connection, Engine, literal, make_url, select, text
from sqlalchemy.exc import OperationalError

from minipaas.config import get_settings
from minipaas.db import pools, session
from minipaas.db.driver_reads import DriverRead
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker]


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pools, "IDLE_CLOSE_SECONDS", 0.3)
    monkeypatch.setattr(pools, "CHECK_EVERY_SECONDS", 0.0)


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    made = session._engine(pool_size=4, max_overflow=2)
    yield made
    made.dispose()


def _pid(connection: Connection) -> int:
    return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _alive(pids: set[int], expected: set[int] | None = None) -> set[int]:
    """Which of these backends still run. A closed connection's backend ends a moment after
    the client left: given what is expected, waits up to 2 s for it."""
    deadline = time.monotonic() + 2
    while True:
        with session.get_engine().connect() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": list(pids)},
            )
            alive = {int(pid) for (pid,) in rows}
        if expected is None or alive == expected or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _burst(engine: Engine, size: int) -> list[int]:
    """Opens `size` connections at once, returns them; their backends' pids, last returned
    first."""
    held = [engine.connect() for _ in range(size)]
    pids = [_pid(connection) for connection in held]
    for connection in held:
        connection.close()
    return list(reversed(pids))


def test_what_a_burst_opened_is_closed_once_it_waited_too_long(
    short_idle: None, engine: Engine
) -> None:
    pids = _burst(engine, 4)
    assert _alive(set(pids)) == set(pids)
    asyncio.run(asyncio.sleep(0.5))
    with engine.connect() as connection:  # returning it runs the check
        reused = _pid(connection)
    assert reused == pids[0]  # LIFO: the most recently returned one
    assert _alive(set(pids), {reused}) == {reused}
    pool = engine.pool
    assert pool.checkedin() == 1 and pool.checkedout() == 0
    # The pool's count of connections stays right: it opens up to its size + overflow again
    again = [engine.connect() for _ in range(6)]
    assert pool.checkedout() == 6
    for connection in again:
        connection.close()


def test_connections_returned_within_the_limit_are_kept(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pools, "IDLE_CLOSE_SECONDS", 2.0)
    pids = _burst(engine, 4)
    closed = session._closes_idle(engine.pool).close_idle()
    assert closed == 0 and _alive(set(pids)) == set(pids)


def test_a_connection_waits_from_when_it_came_back_not_from_when_it_was_opened(
    short_idle: None, engine: Engine
) -> None:
    """One held longer than the limit (a deploy holds its app's lock for minutes) is not
    closed as it comes back."""
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(4242, 1)"))
        holder_pid = _pid(holder)
        asyncio.run(asyncio.sleep(0.5))
        holder.execute(text("SELECT pg_advisory_unlock(4242, 1)"))
        holder.commit()
    # Coming back ran the check (CHECK_EVERY_SECONDS is 0 here)
    assert engine.pool.checkedin() == 1
    assert _alive({holder_pid}, {holder_pid}) == {holder_pid}
    with engine.connect() as again:
        assert _pid(again) == holder_pid


def test_the_event_loops_read_pool_closes_its_idle_connections(
    short_idle: None, stack: Stack
) -> None:
    async def scenario() -> tuple[int, set[int]]:
        engine = session.async_read_engine()
        held = [await engine.connect() for _ in range(3)]
        pids = [int((await c.execute(text("SELECT pg_backend_pid()"))).scalar_one()) for c in held]
        for connection in held:
            await connection.close()
        await asyncio.sleep(0.5)
        closed = await session.close_idle_async_connections()
        alive = await asyncio.to_thread(_alive, set(pids), set())
        await session.close_async_read_engine()
        return closed, alive

    closed, alive = asyncio.run(scenario())
    assert closed == 3 and alive == set()


def _terminate(pids: set[int]) -> None:
    """Ends these backends from outside the process's pools, as a restart would, and waits
    until they are gone."""
    url = make_url(get_settings().database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as killer:
        killer.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(pids)]
        )
        deadline = time.monotonic() + 2
        while killer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the terminated backends did not end"
            time.sleep(0.05)


def _warm_pools() -> set[int]:
    """The main and the read pool each hold one connection, used a moment ago."""
    pids = set()
    for engine in (session.get_engine(), session.read_engine()):
        with engine.connect() as connection:
            pids.add(_pid(connection))
    return pids


def test_a_disconnect_one_pool_sees_renews_the_other_pools_too(stack: Stack) -> None:
    """PostgreSQL restarted quickly: every session ended, and connections used less than
    PING_IDLE_SECONDS ago are not pinged. The first statement to find its connection gone
    fails; the other pools of the process then reopen theirs instead of failing too."""
    _terminate(_warm_pools())
    with pytest.raises(OperationalError), session.read_engine().connect() as connection:
        connection.execute(text("SELECT 1"))
    with session.get_engine().connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


def test_the_apis_token_read_renews_the_other_pools_too(stack: Stack) -> None:
    """Most API requests meet a restarted server first in the token lookup, a read on the
    driver's own cursor (db/driver_reads.py), not through SQLAlchemy's execute."""
    _terminate(_warm_pools())
    read = DriverRead(select(literal(1)))
    with pytest.raises(OperationalError), session.read_engine().connect() as connection:
        read.all(connection, {})
    with session.get_engine().connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1


def test_connections_reopened_after_a_restart_are_not_renewed_again(stack: Stack) -> None:
    """An older connection that fails later (one a job held through the restart) does not
    make the pools reopen what they opened since."""
    with session.get_engine().connect() as held:
        pids = _warm_pools() | {_pid(held)}
        held.commit()
        _terminate(pids)
        with pytest.raises(OperationalError), session.read_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        with session.get_engine().connect() as reopened:
            fresh = _pid(reopened)
        with pytest.raises(OperationalError):
            held.execute(text("SELECT 1"))
    # The failed connection's entry comes back first and reconnects; the reopened one is kept
    with session.get_engine().connect() as first, session.get_engine().connect() as second:
        assert fresh in {_pid(first), _pid(second)}


def test_a_cancelled_request_renews_no_other_connection(stack: Stack) -> None:
    """A client that goes away cancels its request's task mid-query: SQLAlchemy drops that
    connection, and the server is fine, so the other pools keep theirs."""
    with session.get_engine().connect() as connection:
        kept = _pid(connection)

    async def cancelled_mid_query() -> None:
        async with session.async_read_engine().connect() as connection:
            query = asyncio.ensure_future(connection.execute(text("SELECT pg_sleep(5)")))
            await asyncio.sleep(0.3)
            query.cancel()
            with pytest.raises(asyncio.CancelledError):
                await query
        await session.close_async_read_engine()

    asyncio.run(cancelled_mid_query())
    with session.get_engine().connect() as connection:
        assert _pid(connection) == kept
