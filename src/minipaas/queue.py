"""The job queue (Redis + RQ). Jobs carry ids only; PostgreSQL holds the truth."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rq import Callback, Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from minipaas import logs
from minipaas.config import get_settings


class QueueUnavailable(Exception):
    pass


@lru_cache
def get_redis() -> Redis:
    return new_redis()


def new_redis(*, retries: bool = True, timeout: float | None = None) -> Redis:
    """A client of its own: the RQ worker raises its socket timeout for blocking dequeues,
    which must not slow the reconciler's and the jobs' calls when Redis hangs. Without
    `retries`, a refused connection fails at once (redis-py's default retries with backoff
    took ~4.7 s); `timeout` bounds connecting and each answer (default 3 s and 10 s)."""
    settings = get_settings()
    extra: dict[str, Any] = {} if retries else {"retry": Retry(NoBackoff(), 0)}
    return Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password,
        socket_connect_timeout=timeout or 3,
        socket_timeout=timeout or 10,
        health_check_interval=30,
        **extra,
    )


# Turns and leases are asked for several times a second by background loops (the healer
# every 0.5 s): a Redis that is down or hangs must cost such a loop a moment, not redis-py's
# ~5 s of retries or a 10 s read timeout, before it goes on as if it had the turn
_COORDINATION_TIMEOUT = 0.5
_coordination_clients: dict[tuple[object, ...], Redis] = {}


def _coordination_redis() -> Redis:
    """One client per process and Redis (its pool is shared by the loops' threads)."""
    settings = get_settings()
    key = (
        os.getpid(),
        settings.redis_host,
        settings.redis_port,
        settings.redis_db,
        settings.redis_password,
    )
    client = _coordination_clients.get(key)
    if client is None:
        client = new_redis(retries=False, timeout=_COORDINATION_TIMEOUT)
        _coordination_clients[key] = client
    return client


def get_queue(connection: Redis | None = None) -> Queue:
    """Deploys."""
    settings = get_settings()
    return Queue(settings.queue_name, connection=connection or get_redis())


def get_action_queue(connection: Redis | None = None) -> Queue:
    """Lifecycle actions and deletes: workers take these first, never behind queued deploys."""
    settings = get_settings()
    return Queue(f"{settings.queue_name}-actions", connection=connection or get_redis())


def get_build_queue(connection: Redis | None = None) -> Queue:
    """Builds from source: only the builder processes take these (BUILD_CONCURRENCY of
    them), so a long build never holds a worker that deploys or stops apps."""
    settings = get_settings()
    return Queue(f"{settings.queue_name}-builds", connection=connection or get_redis())


def worker_queues(connection: Redis | None = None) -> list[Queue]:
    """What a worker listens to, in order of priority."""
    return [get_action_queue(connection), get_queue(connection)]


def enqueue(
    function: Callable[..., Any],
    *args: Any,
    job_id: str,
    timeout: int,
    on_failure: Callable[..., Any] | None = None,
    action: bool = False,
    build: bool = False,
) -> Job:
    """Queues `function(*args)` (a lifecycle action on the actions queue, a build on the
    builds queue); jobs carry ids only, the request id rides in their meta."""
    try:
        target = get_build_queue() if build else get_action_queue() if action else get_queue()
        return target.enqueue_call(
            function,
            args=args,
            job_id=job_id,
            timeout=timeout,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
            on_failure=Callback(on_failure) if on_failure is not None else None,
            meta={"request_id": logs.request_id.get()},
        )
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(f"the job queue (Redis) is not reachable: {exc}") from exc


def job_status(job_id: str) -> str | None:
    """The job's RQ status ("queued", "started", "failed", ...), or None if Redis lost it."""
    try:
        status = Job.fetch(job_id, connection=get_redis()).get_status(refresh=False)
        return None if status is None else str(getattr(status, "value", status))
    except NoSuchJobError:
        return None
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(f"the job queue (Redis) is not reachable: {exc}") from exc


@dataclass(frozen=True)
class JobRun:
    """Where a job stands: RQ's status and the worker that took it (None before one did)."""

    status: str
    worker_name: str | None


def job_run(job_id: str) -> JobRun | None:
    """The job's status and worker, or None if Redis does not know the job."""
    try:
        job = Job.fetch(job_id, connection=get_redis())
    except NoSuchJobError:
        return None
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(f"the job queue (Redis) is not reachable: {exc}") from exc
    status = job.get_status(refresh=False)
    return JobRun(str(getattr(status, "value", status)), job.worker_name or None)


def claim_turn(name: str, seconds: float) -> bool:
    """True for one caller per `seconds` across every process of this instance (a lease in
    Redis). Without Redis the caller takes its turn: what it guards must be safe to repeat."""
    key = f"minipaas:{get_settings().instance_name}:turn:{name}"
    try:
        turn = _coordination_redis().set(key, os.getpid(), nx=True, px=max(100, int(seconds * 900)))
        return bool(turn)
    except (RedisError, OSError):
        return True


def hold_lease(name: str, seconds: float) -> bool:
    """True while this process holds the named lease: taken when free, renewed by its
    holder's calls, lost `seconds` after the holder's last one (a dead worker's passes on).
    For work with state in memory that one process must do alone. Without Redis the caller
    holds it: what it guards must be safe to run twice."""
    key = f"minipaas:{get_settings().instance_name}:lease:{name}"
    holder = f"{os.uname().nodename}:{os.getpid()}"
    ttl = max(100, int(seconds * 1000))
    try:
        redis = _coordination_redis()
        if redis.set(key, holder, nx=True, px=ttl):
            return True
        current = redis.get(key)
        if current in (holder, holder.encode()):
            return bool(redis.pexpire(key, ttl))
        return False
    except (RedisError, OSError):
        return True


def is_enqueued(job_id: str) -> bool:
    """The job's id is in the queue's list: a worker will take it. A job can say "queued"
    without being there when Redis was killed between writing the job and pushing its id."""
    try:
        return any(
            waiting.get_job_position(job_id) is not None
            for waiting in (get_action_queue(), get_queue(), get_build_queue())
        )
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(f"the job queue (Redis) is not reachable: {exc}") from exc


@dataclass(frozen=True)
class WorkerRecord:
    """What an RQ worker registered about itself (its key expires when it stops beating)."""

    hostname: str | None
    pid: int | None
    died: bool  # it registered its death (a clean stop)
    born: datetime | None = None  # when it registered


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def worker_record(name: str) -> WorkerRecord | None:
    """The worker's registration, or None when it has expired (or never existed)."""
    try:
        raw = get_redis().hgetall(SimpleWorker.redis_worker_namespace_prefix + name)
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(f"the job queue (Redis) is not reachable: {exc}") from exc
    if not raw:
        return None
    fields = {_text(key): _text(value) for key, value in raw.items()}
    pid = fields.get("pid", "")
    return WorkerRecord(
        hostname=fields.get("hostname") or None,
        pid=int(pid) if pid.isdigit() else None,
        died="death" in fields,
        born=_parse_time(fields.get("birth")),
    )


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def delete_job(job_id: str) -> None:
    try:
        Job.fetch(job_id, connection=get_redis()).delete()
    except NoSuchJobError:
        return
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(f"the job queue (Redis) is not reachable: {exc}") from exc


@contextmanager
def pending_action(app_id: int, action: str, ttl_seconds: int) -> Iterator[bool]:
    """At most one lifecycle action per app waits in the queue; yields False if one does.

    The claim ends when the waiting request ends, or after the job's timeout if the API dies.
    """
    key = f"minipaas:{get_settings().instance_name}:pending-action:{app_id}"
    try:
        claimed = bool(get_redis().set(key, action, nx=True, ex=ttl_seconds + 5))
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(f"the job queue (Redis) is not reachable: {exc}") from exc
    try:
        yield claimed
    finally:
        if claimed:
            with suppress(RedisError, OSError):  # else it expires by itself
                get_redis().delete(key)


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: its return value if it finished, else RQ's status for it."""

    status: str
    value: object = None


def wait_for_job(job: Job, seconds: float) -> JobEnd | None:
    """Waits for a job to end; None if it did not within `seconds`."""
    deadline = time.monotonic() + seconds
    delay = 0.02
    while True:
        try:
            status = job.get_status(refresh=True)
        except (RedisError, OSError):
            return None
        if status == JobStatus.FINISHED:
            return JobEnd("finished", job.return_value(refresh=True))
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return JobEnd(str(getattr(status, "value", status)))
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
