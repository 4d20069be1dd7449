"""Engine and sessions: one engine per process, created lazily (RQ forks workers)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from minipaas.config import get_settings


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    return create_engine(
        settings.database_url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        connect_args={"connect_timeout": 5},
    )


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _session_factory()()


@contextmanager
def get_session() -> Iterator[Session]:
    """A session for code outside a request (jobs, CLI); rolls back on error."""
    session = new_session()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# SQLSTATE classes of a server that is gone or restarting: 08 connection exception,
# 57P01-57P04 shut down, crashed, starting up, database dropped
_OUTAGE_SQLSTATES = ("08", "57P")


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
