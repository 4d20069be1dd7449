"""Waiting for the worker from a request handler, on the event loop rather than a thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


async def poll_until(check: Callable[[], T | None], seconds: float) -> T | None:
    """Runs the blocking `check` in the thread pool (20 ms doubling-ish to 250 ms apart) until
    it returns something, at least once; None after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay = 0.02
    while True:
        found = await run_in_threadpool(check)
        if found is not None:
            return found
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.25)
