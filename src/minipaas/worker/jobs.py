"""RQ jobs. Each takes ids only and calls a service; the database holds the truth."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import Token
from typing import Any

from rq import get_current_job

from minipaas import logs
from minipaas.services import deployments, lifecycle
from minipaas.services.state import Action

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


def deploy(deployment_id: int) -> None:
    with _job_context(deployment_id=deployment_id):
        deployments.run_deployment(deployment_id)


def app_action(app_id: int, action: str) -> dict[str, Any]:
    with _job_context(app_id=app_id):
        log.info("%s app %s", action, app_id)
        return lifecycle.perform_action(app_id, Action(action))


def delete_app(app_id: int) -> dict[str, Any]:
    with _job_context(app_id=app_id):
        log.info("delete app %s", app_id)
        return lifecycle.perform_delete(app_id)


def on_deploy_job_failure(job: Any, connection: Any, exc_type: Any, *args: Any) -> None:
    """Backstop for a deploy job that died without ending its deployment row."""
    deployment_id = int(job.args[0])
    reason = f"the deployment job failed ({getattr(exc_type, '__name__', exc_type)}); deploy again"
    log.error("deploy job %s failed: %s", job.id, reason)
    deployments.fail_abandoned_deployment(deployment_id, reason, take_lock=True)
