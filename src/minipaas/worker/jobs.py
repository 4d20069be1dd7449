"""RQ jobs, and the one place each kind is queued (job id, timeout, failure callback).

Each job takes ids only and calls a service; the database holds the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Token
from typing import Any

from rq import get_current_job
from rq.job import Job

from minipaas import logs, queue
from minipaas.config import get_settings
from minipaas.services import app_actions, lifecycle
from minipaas.services.builds import pipeline as build_pipeline
from minipaas.services.deployments import dispatch, pipeline, recovery
from minipaas.services.job_results import JobResult

log = logging.getLogger(__name__)


@contextmanager
def _job_context(**ids: int) -> Iterator[None]:
    """Every log line of the job names the request that queued it and what it works on."""
    job = get_current_job()
    tokens: list[Token[Any]] = [logs.request_id.set(job.meta.get("request_id") if job else None)]
    if "deployment_id" in ids:
        tokens.append(logs.deployment_id.set(ids["deployment_id"]))
    if "app_id" in ids:
        tokens.append(logs.app_id.set(ids["app_id"]))
    try:
        yield
    finally:
        for token in reversed(tokens):
            token.var.reset(token)


# --- deploys -------------------------------------------------------------------------------


def deploy_job_id(deployment_id: int) -> str:
    """Fixed per deployment: queueing it twice (the reconciler re-queues) runs it once."""
    return f"deploy-{deployment_id}"


def deploy(deployment_id: int) -> None:
    with _job_context(deployment_id=deployment_id):
        try:
            pipeline.run_deployment(deployment_id)
        finally:
            # Its slot is free: the owner's next waiting deployment may go
            dispatch.dispatch_after(deployment_id)


def on_deploy_job_failure(job: Any, connection: Any, exc_type: Any, *args: Any) -> None:
    """Backstop for a deploy job that died without ending its deployment row."""
    deployment_id = int(job.args[0])
    reason = f"the deployment job failed ({getattr(exc_type, '__name__', exc_type)}); deploy again"
    log.error("deploy job %s failed: %s", job.id, reason)
    recovery.end_abandoned_deployment_locked(deployment_id, reason)
    dispatch.dispatch_after(deployment_id)


def enqueue_deploy(deployment_id: int) -> str:
    """Queues a deployment's job; returns its id. Raises queue.QueueUnavailable."""
    job = queue.enqueue(
        deploy,
        deployment_id,
        job_id=deploy_job_id(deployment_id),
        timeout=get_settings().deploy_timeout_seconds,
        on_failure=on_deploy_job_failure,
    )
    return str(job.id)


# --- lifecycle actions ---------------------------------------------------------------------


def run_action(action_id: int) -> JobResult:
    with _job_context():
        log.info("action %s", action_id)
        return app_actions.run_action(action_id)


def delete_app(app_id: int) -> JobResult:
    with _job_context(app_id=app_id):
        log.info("delete app %s", app_id)
        return lifecycle.perform_delete(app_id)


def action_job_id(action_id: int) -> str:
    """Fixed per action: the reconciler queues it again under the same id."""
    return f"action-{action_id}"


def enqueue_action(action_id: int, *, timeout: int) -> str:
    """Queues an action's job on the actions queue; returns its id. Raises QueueUnavailable."""
    job = queue.enqueue(
        run_action, action_id, job_id=action_job_id(action_id), timeout=timeout, action=True
    )
    return str(job.id)


def delete_job_id(app_id: int) -> str:
    """Fixed per app: a second delete while one is pending is refused (lifecycle.py)."""
    return f"delete-{app_id}"


def enqueue_delete(app_id: int, *, timeout: int) -> Job:
    return queue.enqueue(
        delete_app, app_id, job_id=delete_job_id(app_id), timeout=timeout, action=True
    )


# --- builds (their own queue: only builder processes take them) ---------------------------


def build_job_id(build_id: int) -> str:
    """Fixed per build: queueing it twice (the reconciler re-queues) runs it once."""
    return f"build-{build_id}"


def build(build_id: int) -> None:
    with _job_context():
        log.info("build %s", build_id)
        build_pipeline.run_build(build_id)


def on_build_job_failure(job: Any, connection: Any, exc_type: Any, *args: Any) -> None:
    """Backstop for a build job that died (e.g. RQ's timeout) without ending its row."""
    reason = f"the build job failed ({getattr(exc_type, '__name__', exc_type)}); build again"
    log.error("build job %s failed: %s", job.id, reason)
    build_pipeline.end_abandoned_build(int(job.args[0]), reason)


def enqueue_build(build_id: int) -> str:
    """Queues a build's job on the builds queue; returns its id. Raises QueueUnavailable."""
    job = queue.enqueue(
        build,
        build_id,
        job_id=build_job_id(build_id),
        # The build stops itself at BUILD_TIMEOUT_SECONDS; RQ's timeout is the backstop
        timeout=get_settings().build_timeout_seconds + 120,
        on_failure=on_build_job_failure,
        build=True,
    )
    return str(job.id)
