"""One deploy or lifecycle action per app at a time, across worker processes.

The locks are PostgreSQL's session-level advisory locks, taken on a connection of the
autocommit pool (db.session.autocommit): a session lock needs no transaction, and without
one the lock and the unlock are a round trip each instead of three (BEGIN, the call, COMMIT).
The deploy path and every reconciler pass over the apps take them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from minipaas.db.session import autocommit

# First key of PostgreSQL's two-key advisory locks: says "this is an app lock"
_APP_LOCK_NAMESPACE = 0x6D70  # "mp"


@contextmanager
def app_lock(app_id: int) -> Iterator[None]:
    """Holds a session-level advisory lock on a connection of its own."""
    with autocommit() as connection:
        connection.execute(
            text("SELECT pg_advisory_lock(:ns, :app)"), {"ns": _APP_LOCK_NAMESPACE, "app": app_id}
        )
        try:
            yield
        finally:
            # After a database restart the lock is gone with its session: nothing to undo
            with suppress(SQLAlchemyError):
                connection.execute(
                    text("SELECT pg_advisory_unlock(:ns, :app)"),
                    {"ns": _APP_LOCK_NAMESPACE, "app": app_id},
                )


@contextmanager
def try_app_lock(app_id: int) -> Iterator[bool]:
    """Like app_lock, but does not wait: yields False when someone is working on the app."""
    with autocommit() as connection:
        acquired = bool(
            connection.execute(
                text("SELECT pg_try_advisory_lock(:ns, :app)"),
                {"ns": _APP_LOCK_NAMESPACE, "app": app_id},
            ).scalar()
        )
        try:
            yield acquired
        finally:
            if acquired:
                with suppress(SQLAlchemyError):
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:ns, :app)"),
                        {"ns": _APP_LOCK_NAMESPACE, "app": app_id},
                    )
