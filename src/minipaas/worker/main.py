"""The worker process: takes jobs from the queue, one at a time.

It outlives Redis and PostgreSQL going away: RQ's work loop quits when its own bookkeeping
meets a dead Redis ("found an unhandled exception, quitting"), so a new loop starts, under a
new worker name, once Redis answers again; jobs meet PostgreSQL's absence themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from types import FrameType

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from sqlalchemy import text

from minipaas.config import get_settings
from minipaas.db.session import close_idle_connections, get_engine
from minipaas.logs import configure_json_logging
from minipaas.queue import get_build_queue, new_redis, worker_queues
from minipaas.runtime import get_runtime
from minipaas.worker import (
    jobs,  # noqa: F401  (imported up front, so the first job is fast)
    liveness,
)
from minipaas.worker.reconciler import ReconcilerThread, reconcile_once

log = logging.getLogger(__name__)

# Waits between attempts to reach Redis again
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 5.0
# A work loop that ran this long before it ended starts again without waiting
HEALTHY_RUN_SECONDS = 60.0


class QueueWorker(SimpleWorker):
    """RQ's in-process worker that remembers a stop request and retries Redis every <= 5 s."""

    # RQ's own wait between dequeue attempts while Redis is down (its default: up to 60 s)
    max_connection_wait_time = RECONNECT_MAX_DELAY
    stop_requested = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def _warm_up() -> None:
    """Connect to PostgreSQL and Docker once, before the first job needs them."""
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        runtime = get_runtime()
        runtime.ping()
        # Made (or found) now rather than in the first deploy's path: creating it takes ~0.1 s
        runtime.ensure_apps_network()
    except Exception as exc:  # not fatal: jobs connect again and fail with a clear error
        log.warning("warm-up failed: %s", exc)


def _close_idle_connections_every(seconds: float) -> None:
    while True:
        time.sleep(seconds)
        try:
            close_idle_connections()
        except Exception:
            log.exception("closing idle database connections failed")


def run_worker(*, burst: bool = False, builds: bool = False) -> None:
    settings = get_settings()
    configure_json_logging()
    _warm_up()
    if builds:
        # A builder takes builds only, and leaves repairs to the workers' reconciler; its
        # pools' idle connections are closed by a loop of its own (the workers' reconciler
        # loop does it for them)
        log.info("builder of instance %s starting", settings.instance_name)
        threading.Thread(
            target=_close_idle_connections_every,
            args=(settings.reconcile_interval_seconds,),
            name="idle-connections",
            daemon=True,
        ).start()
        work_until_stopped(new_redis(), burst=burst, queues=lambda c: [get_build_queue(c)])
        return
    # Before taking jobs: repair what a previous worker left (e.g. killed mid-deploy)
    reconcile_once()
    reconciler = ReconcilerThread(settings.reconcile_interval_seconds)
    reconciler.start()
    log.info("worker of instance %s starting", settings.instance_name)
    try:
        work_until_stopped(new_redis(), burst=burst)
    finally:
        reconciler.stop()


def work_until_stopped(
    connection: Redis,
    *,
    burst: bool = False,
    queues: Callable[[Redis], list[Queue]] = worker_queues,
) -> None:
    """Runs RQ's work loop again and again until a stop is asked (SIGTERM) or, in burst
    mode, the queue is empty; a loop Redis ended is followed by a new one once it answers."""
    last: QueueWorker | None = None  # the latest loop's worker: its signal handlers are live
    tidied = True  # it deregistered itself
    pause = 0.0
    while not _stopping(last):
        began = time.monotonic()
        try:
            time.sleep(pause)  # a loop that keeps ending must not spin
            if not wait_for_redis(connection, stopping=partial(_stopping, last)):
                return
            if last is not None and not tidied:
                _retire(last)
                tidied = True
            last, tidied = _new_worker(connection, queues), False
            last.work(burst=burst, with_scheduler=False)
            tidied = True
            if burst or last.stop_requested:
                return
            log.warning("the worker loop ended unexpectedly; starting it again")
        except StopRequested:  # RQ's signal handler, between two loops
            return
        except (RedisError, OSError) as exc:  # Redis went away while the loop tidied up
            log.warning("lost Redis (%s); taking jobs again once it answers", exc)
        healthy = time.monotonic() - began > HEALTHY_RUN_SECONDS
        pause = RECONNECT_FIRST_DELAY if healthy or not pause else pause * 2
        pause = min(pause, RECONNECT_MAX_DELAY)


def _stopping(worker: QueueWorker | None) -> bool:
    return worker is not None and worker.stop_requested


def wait_for_redis(connection: Redis, *, stopping: Callable[[], bool]) -> bool:
    """True once Redis answers a PING, False if a stop is asked meanwhile; waits 0.5 s
    doubling to 5 s between tries."""
    delay = RECONNECT_FIRST_DELAY
    while not stopping():
        try:
            connection.ping()
            return True
        except (RedisError, OSError) as exc:
            log.warning("Redis is not reachable (%s); trying again in %.1f s", exc, delay)
        time.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX_DELAY)
    return False


def _new_worker(connection: Redis, queues: Callable[[Redis], list[Queue]]) -> QueueWorker:
    # Jobs run in this process (no fork per job): the database pool and the Docker client stay
    # warm, which takes ~0.2 s off every deploy. Timeouts still apply (SIGALRM in the job).
    worker = QueueWorker(queues(connection), connection=connection, log_job_description=False)
    liveness.set_current_worker(worker.name)
    return worker


def _retire(worker: QueueWorker) -> None:
    """What a loop that lost Redis could not do itself: deregister, stop listening for
    commands. Best effort: its registration expires by itself."""
    with suppress(RedisError, OSError):
        worker.register_death()  # type: ignore[no-untyped-call]
    with suppress(RedisError, OSError):
        worker.unsubscribe()  # type: ignore[no-untyped-call]
    if worker.pubsub_thread is not None:
        worker.pubsub_thread.stop()
