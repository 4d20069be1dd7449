"""One deploy or lifecycle action per app at a time, across worker processes.

The locks are PostgreSQL's session-level advisory locks, taken on a connection of the
autocommit pool (db.session.autocommit): a session lock needs no transaction, and without
one the lock and the unlock are a round trip each instead of three (BEGIN, the call, COMMIT).
The deploy path and every reconciler pass over the apps take them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, TextClause, text
from sqlalchemy.exc import SQLAlchemyError

from minipaas.db.session import autocommit, discard_connection

# First key of PostgreSQL's two-key advisory locks: says "this is an app lock"
_APP_LOCK_NAMESPACE = 0x6D70  # "mp"


@contextmanager
def app_lock(app_id: int) -> Iterator[None]:
    """Holds a session-level advisory lock on a connection of its own."""
    with autocommit() as connection:
        _locking(connection, _LOCK, app_id)
        try:
            yield
        finally:
            _unlock(connection, app_id)


@contextmanager
def try_app_lock(app_id: int) -> Iterator[bool]:
    """Like app_lock, but does not wait: yields False when someone is working on the app."""
    with autocommit() as connection:
        acquired = bool(_locking(connection, _TRY_LOCK, app_id))
        try:
            yield acquired
        finally:
            if acquired:
                _unlock(connection, app_id)


_LOCK = text("SELECT pg_advisory_lock(:ns, :app)")
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:ns, :app)")
_UNLOCK = text("SELECT pg_advisory_unlock(:ns, :app)")


def _locking(connection: Connection, statement: TextClause, app_id: int) -> object:
    try:
        return connection.execute(statement, {"ns": _APP_LOCK_NAMESPACE, "app": app_id}).scalar()
    except BaseException:
        # Interrupted while it waited (a job's timeout is an exception raised mid-statement):
        # the server may still grant the lock to this session later, and this pool does not
        # reset a connection it gets back, so the connection must never be used again
        discard_connection(connection)
        raise


def _unlock(connection: Connection, app_id: int) -> None:
    try:
        connection.execute(_UNLOCK, {"ns": _APP_LOCK_NAMESPACE, "app": app_id})
    except SQLAlchemyError:
        # After a database restart the lock went with its session. Otherwise it may still be
        # held: ending the session releases it
        discard_connection(connection)
    except BaseException:
        discard_connection(connection)
        raise
