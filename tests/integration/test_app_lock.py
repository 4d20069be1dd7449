"""An app lock whose wait is interrupted (an RQ job's timeout is an exception raised by a
signal mid-statement) leaves no database session that could still be granted the lock: the
waiting statement is cancelled and its connection discarded, never handed out by the
autocommit pool again, and the lock is free once its holder lets go."""

from __future__ import annotations

import secrets
import time

import pytest
from sqlalchemy import text

from minipaas.db.session import get_engine, read_engine
from minipaas.services.app_lock import _APP_LOCK_NAMESPACE, app_lock, try_app_lock
from tests.support.interrupts import TimedOut, timeout_after
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker]


def _holders(app_id: int) -> list[int]:
    """Backends granted the app's lock, or waiting for it."""
    with get_engine().connect() as connection:
        return list(
            connection.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = :ns AND objid = :app"
                ),
                {"ns": _APP_LOCK_NAMESPACE, "app": app_id},
            ).scalars()
        )


def test_an_interrupted_wait_never_holds_the_lock_later(stack: Stack) -> None:
    app_id = 1_000_000 + secrets.randbelow(1_000_000)
    with get_engine().connect() as holder:
        holder.execute(
            text("SELECT pg_advisory_lock(:ns, :app)"), {"ns": _APP_LOCK_NAMESPACE, "app": app_id}
        )
        holder.commit()
        with pytest.raises(TimedOut), timeout_after(0.5), app_lock(app_id):
            pytest.fail("the lock is held by another session")
        holder.execute(
            text("SELECT pg_advisory_unlock(:ns, :app)"),
            {"ns": _APP_LOCK_NAMESPACE, "app": app_id},
        )
        holder.commit()
    # Had the interrupted wait's session lived on, the server would now grant it the lock
    deadline = time.monotonic() + 5
    while _holders(app_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _holders(app_id) == []
    with try_app_lock(app_id) as free:
        assert free
    # The pool hands out only working connections
    for _ in range(3):
        with read_engine().connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
