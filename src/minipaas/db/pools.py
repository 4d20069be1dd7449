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

log = logging.getLogger(__name__)

IDLE_CLOSE_SECONDS = 30.0
CHECK_EVERY_SECONDS = 5.0
# db.session records when each connection came back
IDLE_SINCE = "idle_since"


class IdleClosingPool(QueuePool):
    """QueuePool that closes connections idle in it for longer than IDLE_CLOSE_SECONDS."""

    _next_check = 0.0

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        now = time.monotonic()
        if now >= self._next_check:
            self.close_idle(now)

    def close_idle(self, now: float | None = None) -> int:
        """Closes the connections that waited in the pool too long; how many.
        For an asyncio pool, call it where the pool's own calls run (a checkin does)."""
        now = time.monotonic() if now is None else now
        self._next_check = now + CHECK_EVERY_SECONDS
        if self.checkedin() == 0:
            return 0
        # The queue has no way to look at its bottom: take every waiting connection (most
        # recently used first), close the stale ones, put the rest back in their order
        waiting: list[ConnectionPoolEntry] = []
        while True:
            try:
                waiting.append(self._pool.get(False))
            except sqla_queue.Empty:
                break
        kept: list[ConnectionPoolEntry] = []
        stale: list[ConnectionPoolEntry] = []
        for record in waiting:
            waited = now - float(record.info.get(IDLE_SINCE, now))
            (kept if waited < IDLE_CLOSE_SECONDS else stale).append(record)
        for record in reversed(kept):
            try:
                self._pool.put(record, False)
            except sqla_queue.Full:  # connections came back meanwhile: one too many
                stale.append(record)
        for record in stale:
            try:
                record.close()
            except Exception as exc:  # a connection the server ended already
                log.debug("closing an idle connection failed: %s", exc)
            finally:
                self._dec_overflow()
        return len(stale)


class IdleClosingAsyncPool(IdleClosingPool, AsyncAdaptedQueuePool):
    """The same for an asyncio engine (AsyncAdaptedQueuePool's queue and dialect)."""
