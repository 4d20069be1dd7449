"""After a restore: the database names containers of another host (or of an install torn
down), so every app that should run gets a deployment of its current release, queued for the
workers; the reconciler dispatches it on its first pass (dispatch.dispatch_all_waiting).

Without this, the healer would see each running app's container missing and mark the app
failed ("its container disappeared"), which is right for a container removed by hand but
not for a whole install moved to a new host. Runs with the worker stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from minipaas.clock import now
from minipaas.db.models import (
    PENDING_ACTION_STATUSES,
    ActionStatus,
    App,
    AppAction,
    AppReplica,
    AppStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Release,
)
from minipaas.runtime import RuntimeFailure, get_runtime
from minipaas.services.deployments.outcome import point_app_at

MEANT_TO_RUN = (AppStatus.RUNNING, AppStatus.CRASHED, AppStatus.DEPLOYING)
INTERRUPTED = (
    "interrupted: the platform was restored from a backup taken while this deployment ran; "
    "deploy again"
)


@dataclass(frozen=True)
class RestorePlan:
    redeployed: list[int]  # apps given a deployment of their current release
    failed: list[int]  # apps meant to run with no release to run
    requeued: list[int]  # deployments queued at backup time, queued again


def bring_back_apps(db: Session) -> RestorePlan:
    """Queues a deployment of the current release for every app meant to run; commits."""
    redeployed: list[int] = []
    failed: list[int] = []
    requeued: list[int] = []
    # A stop or start asked for before the backup acted on the old host's containers
    db.execute(
        update(AppAction)
        .where(AppAction.status.in_(PENDING_ACTION_STATUSES))
        .values(
            status=ActionStatus.FAILED,
            failure="unavailable",
            detail="interrupted: the platform was restored from a backup; ask again",
            finished_at=now(),
        )
    )
    for app in db.scalars(select(App).order_by(App.id).with_for_update()):
        active = db.scalar(
            select(Deployment).where(
                Deployment.app_id == app.id,
                Deployment.status.in_((DeploymentStatus.QUEUED, DeploymentStatus.RUNNING)),
            )
        )
        wanted = app.status in MEANT_TO_RUN
        if active is not None and active.status is DeploymentStatus.RUNNING:
            wanted = active.app_status_before in MEANT_TO_RUN or wanted
            _end_interrupted(db, active)
            active = None
        had_container = app.container_id is not None
        # The containers named here are not on this engine (not this install's, at least)
        point_app_at(app, None)
        app.forget_crashes()
        db.execute(delete(AppReplica).where(AppReplica.app_id == app.id))
        if active is not None:
            # Queued at backup time: it runs here as it would have there
            active.dispatched_at = None
            active.job_id = None
            app.status = AppStatus.DEPLOYING
            requeued.append(active.id)
            continue
        if not wanted:
            if app.status is AppStatus.DEPLOYING:
                app.status = AppStatus.FAILED
            if had_container:  # a stopped app: "start" has nothing to start any more
                app.status_detail = (
                    "restored from a backup without its container: deploy it (or roll back "
                    "to a release) to run it again"
                )
            continue
        release = _current_release(db, app)
        if release is None:
            app.status = AppStatus.FAILED
            app.status_detail = "restored from a backup with no release to run; deploy it"
            failed.append(app.id)
            continue
        _queue_release(db, app, release)
        redeployed.append(app.id)
    db.commit()
    return RestorePlan(redeployed=redeployed, failed=failed, requeued=requeued)


def _end_interrupted(db: Session, deployment: Deployment) -> None:
    deployment.status = DeploymentStatus.FAILED
    deployment.error = INTERRUPTED
    deployment.finished_at = now()
    db.add(DeploymentEvent(deployment_id=deployment.id, kind="failed", message=INTERRUPTED))


def _current_release(db: Session, app: App) -> Release | None:
    current = db.get(Deployment, app.current_deployment_id) if app.current_deployment_id else None
    number = current.release_number if current is not None else None
    statement = select(Release).where(Release.app_id == app.id)
    if number is not None:
        statement = statement.where(Release.number == number)
    return db.scalar(statement.order_by(Release.number.desc()))


def _queue_release(db: Session, app: App, release: Release) -> None:
    """A deployment of the release as it was (no new release is recorded when it succeeds).

    Its exact image when this engine has it; otherwise its image by name, pulled per the
    release's pull policy (a failed pull fails the deployment with the reason, as any deploy).
    """
    deployment = Deployment(
        app_id=app.id,
        app_status_before=AppStatus.RUNNING,
        status=DeploymentStatus.QUEUED,
        rollback_to_release=release.number,
        release_number=release.number,
    )
    deployment.set_run_settings(release.run_settings())
    if _image_here(release.image_id):
        deployment.pinned_image_id = release.image_id
    db.add(deployment)
    app.status = AppStatus.DEPLOYING
    app.status_detail = f"restored from a backup: starting release {release.number}"
    db.flush()
    db.add(
        DeploymentEvent(
            deployment_id=deployment.id,
            kind="queued",
            message=f"queued: release {release.number}, after a restore from a backup",
        )
    )


def _image_here(image_id: str) -> bool:
    if not image_id.startswith("sha256:"):
        return False
    try:
        return get_runtime().image_id(image_id) is not None
    except RuntimeFailure:
        return False
