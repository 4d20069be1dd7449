"""Builds whose builder died, builds whose job Redis lost, and build images nobody needs."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from minipaas import queue
from minipaas.config import get_settings
from minipaas.db.models import (
    ACTIVE_BUILD_STATUSES,
    ACTIVE_DEPLOYMENT_STATUSES,
    App,
    Build,
    BuildStatus,
    Deployment,
    Release,
)
from minipaas.db.session import get_session
from minipaas.runtime import get_runtime
from minipaas.runtime.builder import (
    build_networks,
    close_build_networks,
    prune_build_cache,
    remove_build_tag,
)
from minipaas.services import images
from minipaas.services.builds import naming, pipeline
from minipaas.worker import jobs, liveness

log = logging.getLogger(__name__)

# A queued build whose job Redis does not know is queued again after this long
LOST_JOB_GRACE = timedelta(seconds=30)
# An upload or context file this old that no build needs is removed (seconds)
STALE_UPLOAD_SECONDS = 3600.0
# How often the engine's build cache is pruned (seconds)
CACHE_PRUNE_INTERVAL = 3600.0


def end_abandoned_builds() -> list[str]:
    """Running builds whose builder is gone fail; queued ones whose job was lost go again."""
    actions = []
    cutoff = datetime.now(UTC) - LOST_JOB_GRACE
    with get_session() as db:
        rows = db.execute(
            select(Build.id, Build.status, Build.created_at).where(
                Build.status.in_(ACTIVE_BUILD_STATUSES)
            )
        ).all()
    for build_id, status, created_at in rows:
        job_id = jobs.build_job_id(build_id)
        if liveness.job_in_progress(job_id):
            continue
        if status is BuildStatus.RUNNING:
            reason = "the builder stopped (killed or crashed) before the build ended; build again"
            if pipeline.end_abandoned_build(build_id, reason):
                actions.append(f"ended build {build_id} left by a stopped builder")
        elif created_at < cutoff:
            queue.delete_job(job_id)
            jobs.enqueue_build(build_id)
            actions.append(f"queued build {build_id} again: its job was lost")
    return actions


def deploy_builds_left_undeployed() -> list[str]:
    """Builds that succeeded, were to be deployed, and never were (the builder died between
    the two): deployed now, once their builder is surely gone."""
    cutoff = datetime.now(UTC) - LOST_JOB_GRACE
    with get_session() as db:
        found = db.scalars(
            select(Build.id).where(
                Build.status == BuildStatus.SUCCEEDED,
                Build.deploy_on_success.is_(True),
                Build.deployment_id.is_(None),
                Build.error.is_(None),
                Build.finished_at < cutoff,
            )
        ).all()
    actions = []
    for build_id in found:
        if liveness.job_in_progress(jobs.build_job_id(build_id)):
            continue
        if pipeline.deploy_undeployed(build_id):
            actions.append(f"build {build_id}: deployed after its builder stopped")
    return actions


def remove_leftover_build_networks() -> list[str]:
    """Networks of builds that ended (a builder killed mid-build, or an engine that refused
    the removal then), with any step left on them: each holds one of the engine's subnets.
    Listed before the builds are read: a network exists only while its build runs."""
    settings, runtime = get_settings(), get_runtime()
    found = [
        (naming.build_id_of_key(settings, item.build_key), item) for item in build_networks(runtime)
    ]
    if not found:
        return []
    with get_session() as db:
        running = set(
            db.scalars(
                select(Build.id).where(
                    Build.id.in_([build_id for build_id, _ in found if build_id is not None]),
                    Build.status == BuildStatus.RUNNING,
                )
            )
        )
    removed = []
    for build_id, item in found:
        if build_id is not None and build_id not in running:
            removed += close_build_networks(runtime, item.build_key)
    return [f"removed the build network {name}" for name in removed]


def remove_stale_uploads() -> list[str]:
    """Uploads an API process left when it died mid-request, and contexts of ended builds."""
    settings = get_settings()
    cutoff = time.time() - STALE_UPLOAD_SECONDS
    removed = []
    incoming = settings.builds_dir / "incoming"
    for path in incoming.glob("*") if incoming.is_dir() else []:
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(f"removed the stale upload {path.name}")
    contexts = (
        {p for p in settings.builds_dir.glob("*.tar")} if settings.builds_dir.is_dir() else set()
    )
    if contexts:
        with get_session() as db:
            active = set(
                db.scalars(select(Build.id).where(Build.status.in_(ACTIVE_BUILD_STATUSES)))
            )
        for path in contexts:
            if path.stem.isdigit() and int(path.stem) not in active:
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(f"removed the context of ended build {path.stem}")
    return removed


def recent_build_image_ids() -> set[str]:
    """Images of each app's newest KEEP_BUILD_IMAGES builds: the release GC keeps them too."""
    ranked = select(
        Build.image_id,
        func.row_number()
        .over(partition_by=Build.app_id, order_by=Build.number.desc())
        .label("rank"),
    ).where(Build.status == BuildStatus.SUCCEEDED, Build.image_id.is_not(None))
    keep = get_settings().keep_build_images
    with get_session() as db:
        return {image_id for image_id, rank in db.execute(ranked).all() if rank <= keep}


def remove_old_build_images() -> list[str]:
    """Each app keeps its newest KEEP_BUILD_IMAGES builds' images; older tags are removed
    unless a recent release, a deployment, the app's settings or a container needs them.
    A tag is removed only while it names the image its build recorded: one retagged onto
    someone else's image is theirs now."""
    settings = get_settings()
    ranked = select(
        Build.id,
        Build.image_tag,
        Build.image_id,
        func.row_number()
        .over(partition_by=Build.app_id, order_by=Build.number.desc())
        .label("rank"),
    ).where(Build.status == BuildStatus.SUCCEEDED, Build.image_tag.is_not(None))
    with get_session() as db:
        if images.a_build_is_running(db):
            return []  # the next pass collects
        old = [
            (build_id, tag, image_id)
            for build_id, tag, image_id, rank in db.execute(ranked).all()
            if rank > settings.keep_build_images
        ]
        if not old:
            return []
        release_rank = select(
            Release.image_id,
            func.row_number()
            .over(partition_by=Release.app_id, order_by=Release.number.desc())
            .label("rank"),
        ).subquery()
        keep = set(
            db.scalars(
                select(release_rank.c.image_id).where(
                    release_rank.c.rank <= settings.keep_release_images
                )
            )
        )
        for pinned, ran in db.execute(
            select(Deployment.pinned_image_id, Deployment.image_id).where(
                Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES)
            )
        ):
            keep |= {image_id for image_id in (pinned, ran) if image_id}
        configured = set(db.scalars(select(App.image).distinct()))
    runtime = get_runtime()
    keep |= runtime.images_in_use()
    actions = []
    for build_id, tag, image_id in old:
        if tag in configured or image_id in keep or runtime.image_id(tag) != image_id:
            continue
        if remove_build_tag(runtime, tag):
            actions.append(f"removed image {tag} of old build {build_id}")
    if queue.claim_turn("build-cache-prune", CACHE_PRUNE_INTERVAL):
        prune_build_cache(runtime)
    return actions
