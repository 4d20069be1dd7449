"""Engine and sessions: one engine per process, created lazily (RQ forks workers)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from pydantic_core import from_json
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect, ExceptionContext
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from minipaas.config import get_settings
from minipaas.db.pools import IDLE_SINCE, IdleClosingAsyncPool, IdleClosingPool

log = logging.getLogger(__name__)

# A pooled connection idle longer than this is pinged before use (the server may have
# restarted meanwhile); one in steady use is not: a ping per request was a round trip each
PING_IDLE_SECONDS = 1.0
# Connections each process keeps open between uses, and how many more it may open for a
# burst (closed as they come back). Every open one is a PostgreSQL backend of ~3 MiB of its
# own, so a process keeps what it commonly needs, not its peak; a pool only grows to what
# was used at once, and closes what then waits unused for 30 s (db/pools.py). A write
# needs two at its end (its own session and the audit outcome's): with 4 kept, 50 deploy
# requests from 10 clients made PostgreSQL start ~24 backends, and cost the API ~13-18 ms
# of CPU each; with 8 kept, 1-5 backends and ~10 ms.
POOL_SIZE = 8
POOL_OVERFLOW = 12
# Reads (the API's GET requests) have a pool of their own. Opening a connection costs more
# CPU than the query it serves, so what steady load uses stays open: when reads shared the
# 4 kept above, 16 API clients made each process open and close a connection on most
# requests (py-spy: 20% of the API's time in connect; GET /apps/{id} 359 -> 585 req/s).
# An API process may hold 20 + 12 connections at its peak: PostgreSQL allows 400 (8 API
# processes, the most `make up` starts, and the workers' pools fit).
READ_POOL_SIZE = 8
READ_POOL_OVERFLOW = 4


@lru_cache
def get_engine() -> Engine:
    return _engine(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def _engine(**options: Any) -> Engine:
    engine = create_engine(
        get_settings().database_url, poolclass=IdleClosingPool, **_COMMON, **options
    )
    return _watch_idle(engine)


_COMMON: dict[str, Any] = {
    # JSON columns decoded by pydantic-core's parser: the stdlib's cost ~7% of the API's
    # time on a page of 200 apps (two JSON columns a row)
    "json_deserializer": from_json,
    # The most recently used connection first: a light load keeps reusing a few, which
    # stay warm and skip the ping, while the rest wait as spares
    "pool_use_lifo": True,
    "connect_args": {"connect_timeout": 5},
}
# read_engine()'s settings: autocommit, nothing to reset when a connection comes back
_READS: dict[str, Any] = {
    "pool_size": READ_POOL_SIZE,
    "max_overflow": READ_POOL_OVERFLOW,
    "isolation_level": "AUTOCOMMIT",
    "pool_reset_on_return": None,
}


def _note_idle(_: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    record.info[IDLE_SINCE] = time.monotonic()


def _ping_when_idle(dialect: Dialect) -> Callable[..., None]:
    def ping(
        connection: DBAPIConnection, record: ConnectionPoolEntry, _: PoolProxiedConnection
    ) -> None:
        idle_since = record.info.get(IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(connection)
        except dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and checks out (or opens) another. Only the
            # driver's error: a job's timeout raised during the ping must reach the job
            renew_pools_after_disconnect(_opened_at(record))
            raise DisconnectionError(str(exc)) from exc

    return ping


def _opened_at(record: object) -> float:
    """When a pool entry's connection was opened (time.time()); now if it cannot say."""
    return float(getattr(record, "starttime", 0.0) or time.time())


def _on_error(context: ExceptionContext) -> None:
    if context.is_disconnect and isinstance(context.original_exception, psycopg.Error):
        # The driver says the server is gone (SQLAlchemy also calls a cancelled task's or an
        # interrupted thread's connection a disconnect: the server is fine then)
        renew_pools_after_disconnect(_connection_opened_at(context.connection))
    elif _interrupted_mid_statement(context):
        # Not the database's error: a job's timeout, raised by a signal while the statement
        # waited. The connection is still busy with it, and the rollback an ORM flush runs
        # on it before any helper of ours sees the exception would fail and replace the
        # timeout: the statement is cancelled and this connection alone dropped
        with suppress(Exception):
            driver = context.connection.connection.driver_connection  # type: ignore[union-attr]
            if isinstance(driver, psycopg.Connection):
                driver.cancel_safe(timeout=2.0)
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def _usable(connection: Connection | None) -> Connection | None:
    """The connection, if asking it for its driver connection cannot check out another (a
    closed or invalidated Connection would, from inside the error handler)."""
    if connection is None or connection.closed or connection.invalidated:
        return None
    return connection


def _connection_opened_at(connection: Connection | None) -> float:
    usable = _usable(connection)
    try:
        record = usable.connection._connection_record if usable else None
    except Exception:
        record = None
    return _opened_at(record)


def _interrupted_mid_statement(context: ExceptionContext) -> bool:
    exc = context.original_exception
    if not isinstance(exc, Exception) or isinstance(exc, psycopg.Error):
        return False  # exit exceptions: SQLAlchemy drops the connection itself
    connection = _usable(context.connection)
    try:
        return connection is not None and _driver_busy(connection)
    except Exception:  # cannot tell: leave it to SQLAlchemy and the session helpers
        return False


def renew_pools_after_disconnect(opened_at: float) -> None:
    """A connection opened at `opened_at` found the server gone, so are the others of this
    process (PostgreSQL ends every session when it restarts): each pool reopens what it
    opened before now, unless it already did since that connection was opened. Else every
    connection used less than PING_IDLE_SECONDS ago fails a statement of its own after a
    quick restart (CI: a deploy accepted just after failed on its first query).

    Called from error handlers: never raises (its error would replace theirs)."""
    try:
        engines = [engine() for engine in (get_engine, read_engine) if engine.cache_info().currsize]
        with _ASYNC_READ_ENGINES_LOCK:  # a loop's thread may add one meanwhile
            engines += [engine.sync_engine for engine in _ASYNC_READ_ENGINES.values()]
        for engine in engines:
            if isinstance(engine.pool, IdleClosingPool):
                engine.pool.forget_connections_opened_before_now(opened_at)
    except Exception:
        log.exception("renewing the pools after a disconnect failed")


def _watch_idle(engine: Engine) -> Engine:
    event.listen(engine, "checkin", _note_idle)
    event.listen(engine, "checkout", _ping_when_idle(engine.dialect))
    event.listen(engine, "handle_error", _on_error)
    return engine


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _session_factory()()


@lru_cache
def read_engine() -> Engine:
    """A pool whose connections stay in autocommit: each statement commits by itself, with
    no BEGIN, no ROLLBACK when a connection comes back, and no switch of the isolation level
    on every checkout (execution_options(isolation_level=...) on the main pool cost ~140 us
    of CPU per request)."""
    return _engine(**_READS)


# One per event loop: an asyncio pool's connections belong to the loop that opened them (an
# API process has one loop; each TestClient runs its own)
_ASYNC_READ_ENGINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = (
    weakref.WeakKeyDictionary()
)
# Held while the dict changes or is read through: renew_pools_after_disconnect() runs on any
# thread
_ASYNC_READ_ENGINES_LOCK = threading.Lock()


def async_read_engine() -> AsyncEngine:
    """read_engine() for the event loop itself: the API's hottest reads (the token, one app, a
    page of apps) run on the loop with no hop to a worker thread. Under load those hops made
    worker threads and the loop fight over the GIL, and a request whose thread lost that
    fight for seconds (1-4 s, the p99 of `make bench`) while the others went on."""
    loop = asyncio.get_running_loop()
    engine = _ASYNC_READ_ENGINES.get(loop)
    if engine is None:
        # No overflow: a request waits its turn on the loop (no thread held, first come first
        # served) rather than open a connection, so an API process holds at most 40
        options = _READS | {"max_overflow": 0}
        engine = create_async_engine(
            get_settings().database_url, poolclass=IdleClosingAsyncPool, **_COMMON, **options
        )
        _watch_idle(engine.sync_engine)
        with _ASYNC_READ_ENGINES_LOCK:
            _ASYNC_READ_ENGINES[loop] = engine
    return engine


async def close_async_read_engine() -> None:
    """The running loop's connections closed (the API's shutdown), not left to the collector."""
    with _ASYNC_READ_ENGINES_LOCK:
        engine = _ASYNC_READ_ENGINES.pop(asyncio.get_running_loop(), None)
    if engine is not None:
        await engine.dispose()


def new_read_session() -> Session:
    """A session for requests that only read (GET): no BEGIN and no ROLLBACK round trips, and
    closing it costs no round trip. Any write it makes is committed by itself, so it is no
    place for several writes that belong together."""
    return _session_factory()(bind=read_engine())


def close_idle_connections() -> int:
    """The sync pools' connections idle too long, closed (db/pools.py): a process at rest
    returns none, so its pools do not check by themselves. How many were closed."""
    return sum(
        _closes_idle(engine().pool).close_idle()
        for engine in (get_engine, read_engine)
        if engine.cache_info().currsize
    )


async def close_idle_async_connections() -> int:
    """The same for this event loop's read pool, run where its driver's calls may run."""
    engine = _ASYNC_READ_ENGINES.get(asyncio.get_running_loop())
    if engine is None:
        return 0
    return await greenlet_spawn(_closes_idle(engine.sync_engine.pool).close_idle)


def _closes_idle(pool: Pool) -> IdleClosingPool:
    if not isinstance(pool, IdleClosingPool):
        raise TypeError(f"not a pool of db/pools.py: {type(pool).__name__}")
    return pool


def dispose_engines() -> None:
    """Close every pooled connection (e.g. after a restore replaced the schema)."""
    get_engine().dispose()
    read_engine().dispose()


def forget_engines() -> None:
    """The next use builds new engines from the settings (which changed, e.g. in tests):
    the old pools' connections are closed (but the event loops' own: see below)."""
    for engine in (get_engine, read_engine):
        if engine.cache_info().currsize:
            engine().dispose()
        engine.cache_clear()
    _session_factory.cache_clear()
    # Each loop makes a new one; the old ones are not closed here (no loop to close them on):
    # their connections end when the collector takes them (tests only: a server keeps its)
    with _ASYNC_READ_ENGINES_LOCK:
        _ASYNC_READ_ENGINES.clear()


@contextmanager
def get_session() -> Iterator[Session]:
    """A session for code outside a request (jobs, CLI); rolls back on error."""
    session = new_session()
    try:
        yield session
    except BaseException as exc:
        _discard_if_interrupted(session, exc)
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A connection of the autocommit pool (read_engine) for a write that is one statement
    (an event, an audit record, an advisory lock): committed by the statement itself, one
    round trip where a transaction of its own takes three (BEGIN, the statement, COMMIT).

    An exception raised while a statement is still in flight (a job's timeout, raised by a
    signal while the statement waits) discards the connection: returning it would reset it
    with a rollback, which fails on the busy connection, and that database error would
    replace the timeout (or be taken for a lost progress line, and the timeout lost)."""
    connection = read_engine().connect()
    try:
        yield connection
    except SQLAlchemyError:
        connection.close()  # SQLAlchemy already dealt with the connection's state
        raise
    except BaseException:
        if _statement_in_flight(connection):
            discard_connection(connection)
        connection.close()
        raise
    connection.close()


def _statement_in_flight(connection: Connection) -> bool:
    try:
        return _driver_busy(connection)
    except Exception:  # a connection that cannot say is not one to pool again
        return True


def _driver_busy(connection: Connection) -> bool:
    driver = connection.connection.driver_connection
    return bool(driver is not None and driver.info.transaction_status == _ACTIVE)


def discard_connection(connection: Connection) -> None:
    """Ends the connection's server session (and every lock it holds or waits for): the
    statement in flight is cancelled, the connection closed and never pooled again."""
    with suppress(Exception):
        driver = connection.connection.driver_connection
        if driver is not None:
            driver.cancel_safe(timeout=2.0)
    with suppress(Exception):
        connection.invalidate()


@contextmanager
def read_session() -> Iterator[Session]:
    """get_session() for code that only reads, on the autocommit pool (new_read_session):
    no BEGIN and ROLLBACK around its statements, two round trips fewer each time (the
    deploy path's reads; each statement sees committed data as it would in a transaction at
    READ COMMITTED, PostgreSQL's default). A statement interrupted mid-flight discards its
    connection, as autocommit() does."""
    session = new_read_session()
    try:
        yield session
    except BaseException as exc:
        _discard_if_interrupted(session, exc)
        raise
    finally:
        session.close()


def _discard_if_interrupted(session: Session, exc: BaseException) -> None:
    """A session's statement interrupted mid-flight (see autocommit()): its connection goes,
    so that the rollback on close cannot fail and replace `exc`. Only the connection the
    session's transaction already holds: asking the session for one could check a new one
    out, and wait, right here."""
    if isinstance(exc, SQLAlchemyError):
        return
    connection = session.info.get(_HELD_CONNECTION)
    if connection is not None and _statement_in_flight(connection):
        discard_connection(connection)


# Session.info's key for the connection its (outermost) transaction holds now
_HELD_CONNECTION = "minipaas.held_connection"


@event.listens_for(Session, "after_begin")
def _remember_connection(session: Session, transaction: Any, connection: Connection) -> None:
    if transaction.parent is None:
        session.info[_HELD_CONNECTION] = connection


@event.listens_for(Session, "after_transaction_end")
def _forget_connection(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_HELD_CONNECTION, None)


# libpq's "a command is in progress" (psycopg.pq.TransactionStatus.ACTIVE)
_ACTIVE = TransactionStatus.ACTIVE

# SQLSTATE classes of a server that is gone or restarting: 08 connection exception,
# 57P01-57P04 shut down, crashed, starting up, database dropped; and 53300, too many
# connections: passing, as an outage is (answered 503, retried by jobs)
_OUTAGE_SQLSTATES = ("08", "57P", "53300")


def database_unavailable(exc: BaseException) -> bool:
    """The database is down or restarting, as opposed to refusing a query."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(_OUTAGE_SQLSTATES)


def outage_detail(exc: BaseException) -> str:
    """What the driver said ("Connection refused"), without SQLAlchemy's SQL and links or the
    server's address: app owners read it in their deployment's error."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return " ".join(first.rsplit("failed: ", 1)[-1].split())
