"""Cancelling a deployment: the API asks, the worker checks between steps."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from minipaas.clock import now
from minipaas.db.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    App,
    AppStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
)
from minipaas.db.session import read_session
from minipaas.services.deployments.outcome import DeploymentFailed
from minipaas.services.errors import Conflict, NotFound


def cancel_deployment(*, db: Session, app_id: int, deployment_id: int) -> Deployment:
    """A queued deployment ends at once; a running one at the worker's next check.

    Once the route points at the new container it is too late: the answer is 409 and the
    deployment ends as it would have (roll back to undo it).
    """
    deployment = db.scalar(
        select(Deployment)
        .where(Deployment.id == deployment_id, Deployment.app_id == app_id)
        .with_for_update()
    )
    if deployment is None:
        raise NotFound(f"deployment {deployment_id} of app {app_id} does not exist")
    if deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
        raise Conflict(f"deployment {deployment_id} already ended ({deployment.status})")
    if deployment.route_switched_at is not None:
        raise Conflict(
            f"deployment {deployment_id} already switched the route to its new container; "
            "it can no longer be cancelled: wait for it to end, then roll back"
        )
    deployment.cancel_requested_at = now()
    if deployment.status is DeploymentStatus.QUEUED:
        # The worker skips a deployment that is no longer active when its job comes up
        app = db.get(App, app_id)
        assert app is not None
        deployment.status = DeploymentStatus.FAILED
        deployment.error = "cancelled before it started"
        db.add(DeploymentEvent(deployment_id=deployment.id, kind="failed", message="cancelled"))
        deployment.finished_at = now()
        app.status = deployment.app_status_before or AppStatus.CREATED
    db.commit()
    return deployment


def raise_if_cancelled(deployment_id: int) -> None:
    with read_session() as db:
        requested = db.scalar(
            select(Deployment.cancel_requested_at).where(Deployment.id == deployment_id)
        )
    if requested is not None:
        raise DeploymentFailed("cancelled while it was running")


def pass_point_of_no_return(db: Session, deployment_id: int) -> None:
    """Called in the transaction that switches the route: after it, cancels are refused.

    The row lock orders this against cancel_deployment, so a cancel is either seen here (and
    the deploy fails) or refused there.
    """
    deployment = db.get(Deployment, deployment_id, with_for_update=True)
    assert deployment is not None
    if deployment.cancel_requested_at is not None:
        raise DeploymentFailed("cancelled while it was running")
    deployment.route_switched_at = now()
