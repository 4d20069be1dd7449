"""A job's timeout as RQ raises it: an exception a signal (SIGALRM) raises wherever the code
is, mid-statement included."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class TimedOut(Exception):
    """As rq's JobTimeoutException: a plain Exception raised from SIGALRM."""


@contextmanager
def timeout_after(seconds: float) -> Iterator[None]:
    """Raises TimedOut in this (the main) thread after `seconds`, unless the block ended."""

    def raise_timeout(signum: int, frame: FrameType | None) -> None:
        raise TimedOut

    previous = signal.signal(signal.SIGALRM, raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
