"""A deployment's progress lines: what `minipaas deploy` and the events stream show."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from minipaas.db.models import Deployment, DeploymentEvent, DeploymentStatus
from minipaas.db.session import autocommit
from minipaas.services.errors import NotFound

log = logging.getLogger(__name__)


def record_event(deployment_id: int, kind: str, message: str) -> None:
    """One step of a deployment, committed at once so watchers see it live."""
    try:
        with autocommit() as connection:
            connection.execute(
                insert(DeploymentEvent).values(
                    deployment_id=deployment_id, kind=kind, message=message
                )
            )
    except SQLAlchemyError as exc:  # a lost progress line must not fail the deployment
        log.warning("event of deployment %s not recorded: %s", deployment_id, exc)


class CollapsingReporter:
    """Progress lines of one kind: a line that repeats the last one updates it with a count
    ("waiting for health: no HTTP answer (x12)") instead of adding a row each time."""

    def __init__(self, deployment_id: int, kind: str) -> None:
        self.deployment_id = deployment_id
        self.kind = kind
        self._last: tuple[int, str] | None = None
        self._repeats = 1

    def __call__(self, message: str) -> None:
        try:
            with autocommit() as connection:
                if self._last is not None and self._last[1] == message:
                    self._repeats += 1
                    connection.execute(
                        update(DeploymentEvent)
                        .where(DeploymentEvent.id == self._last[0])
                        .values(message=f"{message} (x{self._repeats})")
                    )
                else:
                    event_id = connection.scalar(
                        insert(DeploymentEvent)
                        .values(deployment_id=self.deployment_id, kind=self.kind, message=message)
                        .returning(DeploymentEvent.id)
                    )
                    assert event_id is not None  # INSERT ... RETURNING gives the row's id
                    self._last, self._repeats = (event_id, message), 1
        except SQLAlchemyError as exc:  # a lost progress line must not fail the deployment
            log.warning("event of deployment %s not recorded: %s", self.deployment_id, exc)


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
