"""A deployment's progress lines: what `minipaas deploy` and the events stream show."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from minipaas.db.models import Deployment, DeploymentEvent, DeploymentStatus
from minipaas.db.session import get_session
from minipaas.services.errors import NotFound

log = logging.getLogger(__name__)


def record_event(deployment_id: int, kind: str, message: str) -> None:
    """One step of a deployment, committed at once so watchers see it live."""
    try:
        with get_session() as db:
            db.add(DeploymentEvent(deployment_id=deployment_id, kind=kind, message=message))
            db.commit()
    except SQLAlchemyError as exc:  # a lost progress line must not fail the deployment
        log.warning("event of deployment %s not recorded: %s", deployment_id, exc)


def list_events(
    *, db: Session, app_id: int, deployment_id: int, after: int
) -> Sequence[DeploymentEvent]:
    deployment = db.get(Deployment, deployment_id)
    if deployment is None or deployment.app_id != app_id:
        raise NotFound(f"deployment {deployment_id} of app {app_id} does not exist")
    return db.scalars(
        select(DeploymentEvent)
        .where(DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.id > after)
        .order_by(DeploymentEvent.id)
    ).all()


def events_and_end(
    *, db: Session, app_id: int, deployment_id: int, after: int
) -> tuple[Sequence[DeploymentEvent], bool]:
    """Events after `after`, and whether the deployment had already ended: then these are all
    a stream has to send (its last event was committed with its final status, read first)."""
    deployment = db.get(Deployment, deployment_id)
    if deployment is None or deployment.app_id != app_id:
        raise NotFound(f"deployment {deployment_id} of app {app_id} does not exist")
    ended = deployment.status in (DeploymentStatus.SUCCEEDED, DeploymentStatus.FAILED)
    return list_events(db=db, app_id=app_id, deployment_id=deployment_id, after=after), ended
