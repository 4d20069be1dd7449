"""Connection pools that close what waited unused too long.

A pool keeps the connections a burst opened (up to its size) for good, and each one is a
PostgreSQL backend of ~20 MiB RSS (~4 MiB of its own). With 1,000 apps and 100 running, a
deploy burst left 22 backends idle (530 MiB of the platform's 1.3 GiB). These pools close a
connection that has waited in the pool longer than IDLE_CLOSE_SECONDS: steady load keeps
reusing the same few (the pools are LIFO), so only what load stopped needing is closed, and
a process at rest holds none (its next request opens one: a few ms, once).

Only connections waiting in the pool are closed, never one in use: an advisory lock held on
a connection, or a session between statements, is never cut. The check runs when a
connection comes back, at most every CHECK_EVERY_SECONDS; a process at rest asks for it
with close_idle() (the worker's reconciler loop, the API's timer).
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, QueuePool
from sqlalchemy.util import queue as sqla_queue
from sqlalchemy.util.concurrency import in_greenlet

log = logging.getLogger(__name__)

IDLE_CLOSE_SECONDS = 30.0
CHECK_EVERY_SECONDS = 5.0
# db.session records when each connection came back
IDLE_SINCE = "idle_since"


class IdleClosingPool(QueuePool):
    """QueuePool that closes connections idle in it for longer than IDLE_CLOSE_SECONDS."""

    # SQLAlchemy names a pool's logger after its class: keep QueuePool's (quiet) one
    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"
    _next_check = 0.0

    def forget_connections_opened_before_now(self, failed_opened_at: float) -> None:
        """Every connection opened until now is reopened at its next checkout (the server
        restarted): what SQLAlchemy's pool invalidation (Pool._invalidate) sets when a
        disconnect is seen in this pool, for one another pool saw. Not again for a failing
        connection older than the last renewal: that restart was dealt with already."""
        if self._invalidate_time < failed_opened_at:
            self._invalidate_time = time.time()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        now = time.monotonic()
        # Not for a connection the garbage collector hands back (no driver connection left):
        # no network calls from there
        if now >= self._next_check and record.dbapi_connection is not None and self._may_close():
            self.close_idle(now)

    def _may_close(self) -> bool:
        return True

    def close_idle(self, now: float | None = None) -> int:
        """Closes the connections that waited in the pool too long; how many.
        For an asyncio pool, call it where the pool's own calls run (a checkin does)."""
        now = time.monotonic() if now is None else now
        self._next_check = now + CHECK_EVERY_SECONDS
        stale = self._take_stale(now)
        # Counted out first, in one step with taking them: a checkout meanwhile may open a
        # connection in their place, and an interrupted close (a job's timeout, a cancelled
        # task) leaves the pool's count right; the garbage collector closes what is left
        for _ in stale:
            self._dec_overflow()
        for record in stale:
            try:
                record.close()
            except Exception as exc:  # a connection the server ended already
                log.debug("closing an idle connection failed: %s", exc)
        return len(stale)

    def _take_stale(self, now: float) -> list[ConnectionPoolEntry]:
        """Takes the connections that waited too long out of the queue. They are at its old
        end (connections come back to the other end), looked at under the queue's lock, so
        a checkout never finds the queue emptied for a moment."""
        queue = self._pool
        if not isinstance(queue, sqla_queue.Queue):
            raise TypeError(f"a queue of threads expected, not {type(queue).__name__}")
        stale: list[ConnectionPoolEntry] = []
        with queue.mutex:
            waiting = queue.queue
            while waiting and _waited_too_long(waiting[0], now):
                stale.append(waiting.popleft())
        return stale


class IdleClosingAsyncPool(IdleClosingPool, AsyncAdaptedQueuePool):
    """The same for an asyncio engine (AsyncAdaptedQueuePool's queue and dialect)."""

    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"

    def _may_close(self) -> bool:
        # Closing awaits the driver: only where the pool's own calls run
        return in_greenlet()

    def _take_stale(self, now: float) -> list[ConnectionPoolEntry]:
        """The asyncio queue has no way to look at its old end: every waiting connection is
        taken (most recently used first) and the fresh ones put back in their order. Nothing
        in between awaits, so no other task sees the queue meanwhile."""
        waiting: list[ConnectionPoolEntry] = []
        while True:
            try:
                waiting.append(self._pool.get(False))
            except sqla_queue.Empty:
                break
        stale = [record for record in waiting if _waited_too_long(record, now)]
        for record in reversed(waiting):
            if not _waited_too_long(record, now):
                self._pool.put(record, False)  # as many as were taken: never full
        return stale


def _waited_too_long(record: ConnectionPoolEntry, now: float) -> bool:
    return now - float(record.info.get(IDLE_SINCE, now)) >= IDLE_CLOSE_SECONDS
