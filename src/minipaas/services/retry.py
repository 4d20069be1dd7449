"""Retrying work that failed for a passing reason, a bounded number of times."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from minipaas.runtime import EngineUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

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
