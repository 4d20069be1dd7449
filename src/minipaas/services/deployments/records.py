"""Deployments as the API sees them: request one, list them, read one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipaas.clock import now
from minipaas.config import get_settings
from minipaas.db.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    App,
    AppStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    User,
)
from minipaas.services import quotas, releases
from minipaas.services.apps import get_app
from minipaas.services.builds import naming
from minipaas.services.deployments import dispatch
from minipaas.services.errors import Conflict, NotFound, Unavailable


def active_deployment(*, db: Session, app_id: int) -> Deployment | None:
    return db.scalar(
        select(Deployment).where(
            Deployment.app_id == app_id, Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES)
        )
    )


def list_deployments(
    *, db: Session, app_id: int, limit: int, offset: int
) -> tuple[Sequence[Deployment], int]:
    get_app(db=db, app_id=app_id)
    total = db.scalar(select(func.count()).where(Deployment.app_id == app_id)) or 0
    rows = db.scalars(
        select(Deployment)
        .where(Deployment.app_id == app_id)
        .order_by(Deployment.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total


def get_deployment(*, db: Session, app_id: int, deployment_id: int) -> Deployment:
    deployment = db.get(Deployment, deployment_id)
    if deployment is None or deployment.app_id != app_id:
        raise NotFound(f"deployment {deployment_id} of app {app_id} does not exist")
    return deployment


def request_deployment(
    *,
    db: Session,
    app_id: int,
    rollback_to: int | None = None,
    recorded: Callable[[Deployment], None] | None = None,
) -> Deployment:
    """Records a queued deployment of the app's run settings, then hands its id to the worker.

    With `rollback_to`, that release's run settings and exact image run (0: the release before
    the current one); the app's settings become the release's only when the rollback succeeds.
    `recorded` is called with the new row before it is committed: what the caller writes there
    (a build's link to its deployment) lands in the same transaction, or not at all.
    """
    # populate_existing: the API already loaded this app; read it again under the lock
    app = db.scalar(
        select(App)
        .where(App.id == app_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if app is None:
        raise NotFound(f"app {app_id} does not exist")
    deployment = Deployment(
        app_id=app.id, app_status_before=app.status, status=DeploymentStatus.QUEUED
    )
    release = None
    run = app.run_settings()
    if rollback_to is not None:
        release = releases.choose_release(db=db, app=app, number=rollback_to or None)
        releases.check_release_fits(db=db, app=app, release=release)
        run = release.run_settings()
    # ALLOWED_IMAGES may have changed since the app or the release was made: what runs now
    # must be allowed now
    # (an image the platform built for this app is the app's own, whatever the policy)
    if not naming.is_own_build_image(get_settings(), app.id, run.image):
        quotas.check_image_allowed(get_settings(), run.image)
        # ... and no other app's build in a member's app (rules added since it was saved)
        owner = db.get(User, app.owner_id) if app.owner_id is not None else None
        if owner is not None:
            naming.check_not_a_build(get_settings(), run.image, app_id=app.id, user=owner)
    deployment.set_run_settings(run)
    if release is not None:
        deployment.pinned_image_id = release.image_id
        deployment.rollback_to_release = release.number
    db.add(deployment)
    app.status = AppStatus.DEPLOYING
    app.delete_requested_at = None  # a deploy asked for after a delete wins over it
    _insert_one_active(db, app_id)
    number = deployment.rollback_to_release
    what = f"rollback to release {number}" if number else deployment.image
    db.add(DeploymentEvent(deployment_id=deployment.id, kind="queued", message=f"queued: {what}"))
    if recorded is not None:
        recorded(deployment)
    db.commit()  # the deployment, the app's status and the event in one transaction
    _queue(db, app, deployment)
    return deployment


def _insert_one_active(db: Session, app_id: int) -> None:
    """The partial unique index decides, so two concurrent requests cannot both win."""
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        active = active_deployment(db=db, app_id=app_id)
        which = f"deployment {active.id} is {active.status}" if active else "one is in progress"
        raise Conflict(
            f"app {app_id} is already being deployed ({which}); wait for it to end"
        ) from None


def _queue(db: Session, app: App, deployment: Deployment) -> None:
    """Hands the deployment to the workers, or leaves it waiting for its owner's slot."""
    dispatched = {item.deployment_id: item for item in dispatch.dispatch_waiting(db, app.owner_id)}
    mine = dispatched.get(deployment.id)
    if mine is None:
        db.add(
            DeploymentEvent(
                deployment_id=deployment.id,
                kind="waiting",
                message=dispatch.waiting_message(db, deployment),
            )
        )
        db.commit()
        return
    if mine.job_id is None:
        # Leave nothing stuck in "deploying": the deployment failed before it started
        db.refresh(deployment)
        deployment.status = DeploymentStatus.FAILED
        deployment.error = f"could not queue the deployment: {mine.error}"
        deployment.finished_at = now()
        deployment.job_id = None  # recorded when its slot was taken; it never got the job
        app.status = deployment.app_status_before or AppStatus.CREATED
        db.commit()
        raise Unavailable(f"{mine.error}; the deployment was not started, try again later")
    db.refresh(deployment)
