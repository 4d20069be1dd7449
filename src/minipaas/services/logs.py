"""Reading an app's container output, once or as it comes.

An app with several replicas gets their lines merged in time order, each starting with the
replica it came from ("[r0] ", "[r1] ", ...); a one-replica app's lines are as its container
wrote them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

from starlette.concurrency import run_in_threadpool

from minipaas.db.models import App
from minipaas.runtime import EngineUnavailable, get_runtime
from minipaas.services.errors import Unavailable

FOLLOW_POLL_SECONDS = 0.5


def replica_containers(app: App) -> list[tuple[str, str]]:
    """(label, container id) of each replica; one unlabeled container for a one-replica app."""
    if app.container_id is None:
        return []
    if not app.extra_replicas:
        return [("", app.container_id)]
    return [("r0", app.container_id)] + [
        (f"r{replica.replica}", replica.container_id) for replica in app.extra_replicas
    ]


def _sort_key(stamp: str) -> str:
    """Docker's RFC 3339 stamps drop trailing zeros of the fraction: pad it to sort as text."""
    head, _, fraction = stamp.partition(".")
    return f"{head}.{fraction.rstrip('Z').ljust(9, '0')}"


def _labeled(label: str, stamp: str, text: str, timestamps: bool) -> str:
    prefix = f"[{label}] " if label else ""
    return f"{stamp} {prefix}{text}" if timestamps else f"{prefix}{text}"


def app_logs(*, app: App, tail: int | None, timestamps: bool) -> str:
    """stdout and stderr of the app's current containers; empty when it has none."""
    containers = replica_containers(app)
    if not containers:
        return ""
    runtime = get_runtime()
    try:
        if len(containers) == 1:
            return runtime.logs(containers[0][1], tail=tail, timestamps=timestamps)
        lines: list[tuple[str, str, str, str]] = []
        for label, container_id in containers:
            chunk = runtime.logs(container_id, tail=tail, timestamps=True)
            for line in chunk.splitlines(keepends=True):
                stamp, _, text = line.partition(" ")
                lines.append((_sort_key(stamp), stamp, label, text))
    except EngineUnavailable as exc:
        raise Unavailable(str(exc)) from None
    lines.sort(key=lambda item: item[0])
    if tail is not None:
        lines = lines[-tail:]
    return "".join(_labeled(label, stamp, text, timestamps) for _, stamp, label, text in lines)


async def follow_app_logs(
    *,
    containers: list[tuple[str, str]],
    tail: int,
    timestamps: bool,
    ended: Callable[[], Awaitable[str | None]],
) -> AsyncIterator[str]:
    """The last `tail` lines, then new lines as they come, until `ended` gives a reason (the
    client went away: "", nothing more is sent; access ended: one last "# ..." line says why).
    Several replicas' lines are merged in time order as each poll brings them.

    Short polls of the engine ("logs since the last line we sent") instead of one long-lived
    stream: nothing is left blocked in a thread when the client disconnects.
    """
    runtime = get_runtime()
    last_stamps = dict.fromkeys((container_id for _, container_id in containers), "")
    first = True
    while (reason := await ended()) is None:
        batch: list[tuple[str, str, str, str]] = []
        try:
            for label, container_id in containers:
                since = _since(last_stamps[container_id])
                chunk = await run_in_threadpool(
                    runtime.logs,
                    container_id,
                    tail=tail if first else None,
                    timestamps=True,
                    since=since,
                )
                for line in chunk.splitlines(keepends=True):
                    stamp, _, text = line.partition(" ")
                    if stamp <= last_stamps[container_id]:
                        continue
                    last_stamps[container_id] = stamp
                    batch.append((_sort_key(stamp), stamp, label, text))
        except EngineUnavailable:
            yield "# the Docker engine is not reachable; stopped following\n"
            return
        batch.sort(key=lambda item: item[0])
        if first:
            batch = batch[-tail:]
        first = False
        for _, stamp, label, text in batch:
            yield _labeled(label, stamp, text, timestamps)
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
    if reason:
        yield f"# stream ended: {reason}\n"


def _since(last_stamp: str) -> datetime | None:
    if not last_stamp:
        return None
    # RFC 3339 with nanoseconds: whole seconds are enough for "since"
    return datetime.fromisoformat(last_stamp[:19] + "+00:00") - timedelta(seconds=1)
