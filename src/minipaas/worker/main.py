"""The worker process: takes jobs from the queue, one at a time."""

from __future__ import annotations

import logging

from rq import SimpleWorker
from sqlalchemy import text

from minipaas.config import get_settings
from minipaas.db.session import get_engine
from minipaas.logs import configure_json_logging
from minipaas.queue import get_queue, get_redis
from minipaas.runtime import get_runtime
from minipaas.worker import jobs  # noqa: F401  (imported up front, so the first job is fast)
from minipaas.worker.reconciler import ReconcilerThread, reconcile_once

log = logging.getLogger(__name__)


def _warm_up() -> None:
    """Connect to PostgreSQL and Docker once, before the first job needs them."""
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        get_runtime().ping()
    except Exception as exc:  # not fatal: jobs connect again and fail with a clear error
        log.warning("warm-up failed: %s", exc)


def run_worker(*, burst: bool = False) -> None:
    settings = get_settings()
    configure_json_logging()
    _warm_up()
    # Before taking jobs: repair what a previous worker left (e.g. killed mid-deploy)
    reconcile_once()
    reconciler = ReconcilerThread(settings.reconcile_interval_seconds)
    reconciler.start()
    # Jobs run in this process (no fork per job): the database pool and the Docker client stay
    # warm, which takes ~0.2 s off every deploy. Timeouts still apply (SIGALRM in the job).
    worker = SimpleWorker(
        [get_queue()],
        connection=get_redis(),
        log_job_description=False,
    )
    log.info("worker of instance %s starting", settings.instance_name)
    try:
        worker.work(burst=burst, with_scheduler=False)
    finally:
        reconciler.stop()
