"""RQ jobs. Each takes ids only and calls a service; the database holds the truth."""

from __future__ import annotations

import logging
from typing import Any

from minipaas.services import deployments, lifecycle
from minipaas.services.state import Action

log = logging.getLogger(__name__)


def deploy(deployment_id: int) -> None:
    deployments.run_deployment(deployment_id)


def app_action(app_id: int, action: str) -> dict[str, Any]:
    return lifecycle.perform_action(app_id, Action(action))


def delete_app(app_id: int) -> dict[str, Any]:
    return lifecycle.perform_delete(app_id)


def on_deploy_job_failure(job: Any, connection: Any, exc_type: Any, *args: Any) -> None:
    """Backstop for a deploy job that died without ending its deployment row."""
    deployment_id = int(job.args[0])
    reason = f"the deployment job failed ({getattr(exc_type, '__name__', exc_type)}); deploy again"
    log.error("deploy job %s failed: %s", job.id, reason)
    deployments.fail_abandoned_deployment(deployment_id, reason, take_lock=True)
