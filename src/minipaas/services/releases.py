"""Releases: what each successful deployment ran, and rollbacks to one of them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from minipaas.config import get_settings
from minipaas.db.models import App, Deployment, Release, User
from minipaas.services import quotas
from minipaas.services.errors import Conflict, NotFound


def list_releases(
    *, db: Session, app_id: int, limit: int, offset: int
) -> tuple[Sequence[Release], int]:
    total = db.scalar(select(func.count()).where(Release.app_id == app_id)) or 0
    rows = db.scalars(
        select(Release)
        .where(Release.app_id == app_id)
        .order_by(Release.number.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total


def record_release(db: Session, app: App, deployment: Deployment) -> Release:
    """Called with the app's lock held, when a deployment succeeds."""
    number = (db.scalar(select(func.max(Release.number)).where(Release.app_id == app.id)) or 0) + 1
    release = Release(
        app_id=app.id,
        number=number,
        deployment_id=deployment.id,
        image_id=deployment.image_id or deployment.pinned_image_id or "",
    )
    release.set_run_settings(deployment.run_settings())
    db.add(release)
    deployment.release_number = number
    return release


def choose_release(*, db: Session, app: App, number: int | None) -> Release:
    """Release `number`, or by default the one before the release that runs now."""
    if number is not None:
        release = db.scalar(
            select(Release).where(Release.app_id == app.id, Release.number == number)
        )
        if release is None:
            raise NotFound(f"app {app.id} has no release {number}")
        return release
    current = db.get(Deployment, app.current_deployment_id) if app.current_deployment_id else None
    current_number = current.release_number if current and current.release_number else None
    statement = select(Release).where(Release.app_id == app.id)
    if current_number is not None:
        statement = statement.where(Release.number < current_number)
    release = db.scalar(statement.order_by(Release.number.desc()))
    if release is None:
        raise Conflict(f"app {app.id} has no earlier release to roll back to")
    return release


def check_release_fits(*, db: Session, app: App, release: Release) -> None:
    """A release still has to fit today's limits and its owner's quota."""
    settings = get_settings()
    quotas.check_limits(settings, memory_mb=release.memory_mb, cpus=release.cpus, pids=release.pids)
    owner = db.get(User, app.owner_id) if app.owner_id is not None else None
    if owner is not None:
        # Takes the same per-owner lock as create and PATCH, held until the caller commits
        quotas.check_rollback(settings, db, owner=owner, app=app, release=quotas.Limits.of(release))
