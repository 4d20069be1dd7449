"""Is a job still being carried out? The reconciler asks before it ends a deployment.

A deployment's app lock is not enough: it lives in a PostgreSQL session, and a database
restart frees it while the worker still runs the job.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from minipaas import queue

# Grace for clock granularity between a process's start and its worker's registration
_START_SLACK = timedelta(seconds=5)

# Job states in which someone will still carry the job out
_WAITING = frozenset({"queued", "deferred", "scheduled"})

_current_worker: str | None = None


# An action's or a delete's job that is neither queued nor running this long after it was
# asked for is taken for lost, and queued again
LIFECYCLE_JOB_GRACE = timedelta(seconds=15)


def set_current_worker(name: str | None) -> None:
    """This process's RQ worker now (a new one after each reconnect to Redis)."""
    global _current_worker
    _current_worker = name


def job_in_progress(job_id: str) -> bool:
    """The job waits in the queue, or runs on a worker that is alive.

    Raises queue.QueueUnavailable when Redis cannot say.
    """
    run = queue.job_run(job_id)
    if run is None:
        return False  # lost with Redis's data, or expired
    if run.status == "queued":
        return queue.is_enqueued(job_id)
    if run.status in _WAITING:
        return True
    return run.status == "started" and run.worker_name is not None and _alive(run.worker_name)


def _alive(worker_name: str) -> bool:
    if worker_name == _current_worker:
        return True
    record = queue.worker_record(worker_name)
    if record is None or record.died:
        return False
    if record.pid is not None and record.hostname == socket.gethostname():
        # An earlier worker of this very process ran no job since it lost Redis: jobs run
        # in-process, one at a time
        return record.pid != os.getpid() and _process_runs(record.pid, record.born)
    return True  # on another host: its registration expires when it stops beating


def _process_runs(pid: int, born: datetime | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    # pids wrap around quickly on a busy host: a process that started after the worker
    # registered, or is no worker at all, is some other process with a reused pid
    if not _runs_a_worker(pid) or _started_after(pid, born):
        return False
    try:  # a killed worker not yet reaped by its parent is a zombie: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _runs_a_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # cannot tell: assume it is
    return b"minipaas" in b" ".join(cmdline) and b"worker" in cmdline


def _started_after(pid: int, born: datetime | None) -> bool:
    if born is None:
        return False
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, IndexError, ValueError, StopIteration):
        return False
    started = datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)
    return started > born + _START_SLACK
