"""Reading an app's container output, once or as it comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

from starlette.concurrency import run_in_threadpool

from minipaas.db.models import App
from minipaas.runtime import EngineUnavailable, get_runtime
from minipaas.services.errors import Unavailable

FOLLOW_POLL_SECONDS = 0.5


def app_logs(*, app: App, tail: int | None, timestamps: bool) -> str:
    """stdout and stderr of the app's current container; empty when it has none."""
    if app.container_id is None:
        return ""
    try:
        return get_runtime().logs(app.container_id, tail=tail, timestamps=timestamps)
    except EngineUnavailable as exc:
        raise Unavailable(str(exc)) from None


async def follow_app_logs(
    *,
    container_id: str,
    tail: int,
    timestamps: bool,
    ended: Callable[[], Awaitable[str | None]],
) -> AsyncIterator[str]:
    """The last `tail` lines, then new lines as they come, until `ended` gives a reason (the
    client went away: "", nothing more is sent; access ended: one last "# ..." line says why).

    Short polls of the engine ("logs since the last line we sent") instead of one long-lived
    stream: nothing is left blocked in a thread when the client disconnects.
    """
    runtime = get_runtime()
    last_stamp = ""
    since: datetime | None = None
    first = True
    while (reason := await ended()) is None:
        try:
            chunk = await run_in_threadpool(
                runtime.logs,
                container_id,
                tail=tail if first else None,
                timestamps=True,
                since=since,
            )
        except EngineUnavailable:
            yield "# the Docker engine is not reachable; stopped following\n"
            return
        first = False
        for line in chunk.splitlines(keepends=True):
            stamp, _, text = line.partition(" ")
            if stamp <= last_stamp:
                continue  # seen in the previous poll (since= has one-second granularity)
            last_stamp = stamp
            yield line if timestamps else text
        if last_stamp:
            # RFC 3339 with nanoseconds: whole seconds are enough for "since"
            since = datetime.fromisoformat(last_stamp[:19] + "+00:00") - timedelta(seconds=1)
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
    if reason:
        yield f"# stream ended: {reason}\n"
