"""Retrying work that failed for a passing reason, a bounded number of times."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from minipaas.db.session import database_unavailable, outage_detail
from minipaas.runtime import EngineUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# A database that restarts is back within seconds; one that is not back in this long is
# down for real, and the reconciler ends what is left once it returns
DATABASE_PATIENCE_SECONDS = 30.0
DATABASE_FIRST_DELAY = 0.5
DATABASE_MAX_DELAY = 5.0

# Seconds to wait before each retry: the engine restarting takes a few seconds
TRANSIENT_RETRY_DELAYS = (1.0, 3.0, 6.0)


def retry_transient(
    work: Callable[[], T],
    *,
    delays: Sequence[float] = TRANSIENT_RETRY_DELAYS,
    sleep: Callable[[float], None] = time.sleep,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Runs work; when the Docker engine is unreachable, waits and tries again.

    Deterministic failures (a missing image, a crashing app) are not retried: they would fail
    the same way. After the last delay the engine error is raised with the attempt count.
    """
    for attempt, delay in enumerate([*delays, None], start=1):
        try:
            return work()
        except EngineUnavailable as exc:
            if delay is None:
                raise EngineUnavailable(f"{exc} (gave up after {attempt} attempts)") from exc
            log.warning("attempt %d failed (%s); retrying in %.0f s", attempt, exc, delay)
            sleep(delay)
            if before_retry is not None:
                before_retry()
    raise AssertionError("unreachable")


def retry_database(
    work: Callable[[], T],
    *,
    patience: float = DATABASE_PATIENCE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Runs work; while the database is unreachable, waits (0.5 s doubling to 5 s) and tries
    again, for at most `patience` seconds. Work must be safe to run again from the start."""
    deadline = clock() + patience
    delay = DATABASE_FIRST_DELAY
    while True:
        try:
            return work()
        except Exception as exc:
            if not database_unavailable(exc) or clock() + delay > deadline:
                raise
            detail = outage_detail(exc)
            log.warning("the database is unreachable (%s); trying again in %.1f s", detail, delay)
        sleep(delay)
        delay = min(delay * 2, DATABASE_MAX_DELAY)
