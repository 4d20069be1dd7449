"""Waiting for something that happens in another process: one helper for every test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Calls `check` until it returns a truthy value, and returns that value.

    `check` runs at least once, even with a timeout of 0. An exception of a type in `retry_on`
    counts as "not yet" (e.g. `httpx.HTTPError` while a server restarts, or `AssertionError`
    from an `assert` inside `check` that explains what is still wrong); any other exception
    ends the wait at once. After `timeout` seconds: AssertionError with `message` and the last
    value or exception `check` gave.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            value = check()
        except retry_on as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{message} (not within {timeout:g} s; last: {last!r})")
        time.sleep(min(interval, remaining))
