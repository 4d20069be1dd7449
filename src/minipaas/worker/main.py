"""The worker process: takes jobs from the queue, one at a time."""

from __future__ import annotations

import logging
from typing import Any

from rq import Worker

from minipaas.config import get_settings
from minipaas.queue import get_queue, get_redis
from minipaas.worker import jobs  # imported before forking, so each job starts fast

log = logging.getLogger(__name__)


def _on_work_horse_killed(job: Any, pid: int, status: int, rusage: Any) -> None:
    """The process running a job was killed (OOM, SIGKILL): end its deployment row."""
    if job.func_name == f"{jobs.__name__}.deploy":
        jobs.on_deploy_job_failure(job, None, f"work horse {pid} killed (status {status})")


def run_worker(*, burst: bool = False) -> None:
    settings = get_settings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = Worker(
        [get_queue()],
        connection=get_redis(),
        log_job_description=False,
        work_horse_killed_handler=_on_work_horse_killed,
    )
    log.info("worker of instance %s starting", settings.instance_name)
    worker.work(burst=burst, with_scheduler=False)
