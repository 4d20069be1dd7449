"""Builds as the API sees them: request one (after its upload passed), list, read, cancel,
and read its log."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipaas import queue
from minipaas.clock import now
from minipaas.config import Settings, get_settings
from minipaas.db.models import (
    ACTIVE_BUILD_STATUSES,
    App,
    Build,
    BuildLogLine,
    BuildStatus,
    User,
)
from minipaas.services.errors import (
    Conflict,
    InsufficientStorage,
    NotFound,
    TooManyRequests,
    Unavailable,
)
from minipaas.worker import jobs

_MB = 1024 * 1024


def context_path(settings: Settings, build_id: int) -> Path:
    return settings.builds_dir / f"{build_id}.tar"


@dataclass(frozen=True)
class BuildOptions:
    dockerfile: str
    build_args: dict[str, str]
    deploy: bool


@dataclass(frozen=True)
class Upload:
    """A checked context, ready to build: the clean tar and what the upload was."""

    clean_tar: Path
    sha256: str
    size: int
    files: int
    context_bytes: int


def check_can_build(*, db: Session, app: App, settings: Settings) -> None:
    """Refusals that need no upload: one build per app, the owner's cap, free disk."""
    active = db.scalar(
        select(Build).where(Build.app_id == app.id, Build.status.in_(ACTIVE_BUILD_STATUSES))
    )
    if active is not None:
        raise Conflict(
            f"build {active.number} of app {app.id} is {active.status}; wait for it to end "
            f"or cancel it (POST /apps/{app.id}/builds/{active.number}/cancel)"
        )
    _check_owner_cap(db, app, settings)
    check_free_disk(settings)


def _check_owner_cap(db: Session, app: App, settings: Settings) -> None:
    if app.owner_id is None:
        return
    owner = db.get(User, app.owner_id)
    if owner is None or owner.is_admin:
        return
    # The owner's row lock (after the app's, the order quotas.py keeps): two builds of two
    # apps of one member, asked at once, are counted one after the other
    db.execute(select(User.id).where(User.id == owner.id).with_for_update())
    busy = (
        db.scalar(
            select(func.count())
            .select_from(Build)
            .join(App, App.id == Build.app_id)
            .where(App.owner_id == app.owner_id, Build.status.in_(ACTIVE_BUILD_STATUSES))
        )
        or 0
    )
    if busy >= settings.builds_per_member:
        raise TooManyRequests(
            f"{owner.username} has {busy} builds queued or running and may have "
            f"{settings.builds_per_member} at once (BUILDS_PER_MEMBER); wait for one to end",
            retry_after=30,
        )


def check_free_disk(settings: Settings) -> None:
    settings.builds_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(settings.builds_dir).free // _MB
    if free < settings.build_min_free_disk_mb:
        raise InsufficientStorage(
            f"only {free} MB free under DATA_DIR; builds need BUILD_MIN_FREE_DISK_MB "
            f"({settings.build_min_free_disk_mb} MB): free some disk and build again"
        )


def request_build(
    *, db: Session, app_id: int, user: User, upload: Upload, options: BuildOptions
) -> Build:
    """Records a queued build of the checked context and hands it to the builders."""
    settings = get_settings()
    app = db.scalar(
        select(App)
        .where(App.id == app_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if app is None:
        raise NotFound(f"app {app_id} does not exist")
    check_can_build(db=db, app=app, settings=settings)
    number = (db.scalar(select(func.max(Build.number)).where(Build.app_id == app.id)) or 0) + 1
    build = Build(
        app_id=app.id,
        number=number,
        status=BuildStatus.QUEUED,
        requested_by_id=user.id,
        upload_sha256=upload.sha256,
        upload_bytes=upload.size,
        context_files=upload.files,
        context_bytes=upload.context_bytes,
        dockerfile=options.dockerfile,
        build_args=options.build_args,
        deploy_on_success=options.deploy,
    )
    db.add(build)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise Conflict(f"a build of app {app_id} is in progress; wait for it to end") from None
    upload.clean_tar.rename(context_path(settings, build.id))
    db.commit()
    try:
        build.job_id = jobs.enqueue_build(build.id)
    except queue.QueueUnavailable as exc:
        build.status = BuildStatus.FAILED
        build.error = f"could not queue the build: {exc}"
        build.finished_at = now()
        db.commit()
        context_path(settings, build.id).unlink(missing_ok=True)
        raise Unavailable(f"{exc}; the build was not started, try again later") from exc
    db.commit()
    return build


def list_builds(
    *, db: Session, app_id: int, limit: int, offset: int
) -> tuple[Sequence[Build], int]:
    total = db.scalar(select(func.count()).where(Build.app_id == app_id)) or 0
    rows = db.scalars(
        select(Build)
        .where(Build.app_id == app_id)
        .order_by(Build.number.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total


def get_build(*, db: Session, app_id: int, number: int) -> Build:
    build = db.scalar(select(Build).where(Build.app_id == app_id, Build.number == number))
    if build is None:
        raise NotFound(f"build {number} of app {app_id} does not exist")
    return build


def cancel_build(*, db: Session, app_id: int, number: int) -> Build:
    """A queued build ends now; a running one is stopped by its builder within seconds."""
    build = db.scalar(
        select(Build)
        .where(Build.app_id == app_id, Build.number == number)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if build is None:
        raise NotFound(f"build {number} of app {app_id} does not exist")
    if build.status not in ACTIVE_BUILD_STATUSES:
        raise Conflict(f"build {number} of app {app_id} has ended already ({build.status})")
    build.cancel_requested_at = build.cancel_requested_at or now()
    if build.status is BuildStatus.QUEUED:
        build.status = BuildStatus.CANCELLED
        build.error = "cancelled before it started"
        build.finished_at = now()
    db.commit()
    if build.status is BuildStatus.CANCELLED:
        context_path(get_settings(), build.id).unlink(missing_ok=True)
    return build


def log_lines(*, db: Session, build_id: int, after: int, limit: int) -> list[BuildLogLine]:
    return list(
        db.scalars(
            select(BuildLogLine)
            .where(BuildLogLine.build_id == build_id, BuildLogLine.line > after)
            .order_by(BuildLogLine.line)
            .limit(limit)
        )
    )
