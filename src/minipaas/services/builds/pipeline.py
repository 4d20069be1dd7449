"""How a build goes, in a builder process: check disk, build with the engine's limits while
its lines go to PostgreSQL, then tag, record and hand the image to a normal deployment."""

from __future__ import annotations

import contextlib
import io
import logging
import tarfile
import threading
import time
from pathlib import Path

from sqlalchemy import func, insert, select

from minipaas.clock import now
from minipaas.config import Settings, get_settings
from minipaas.db.models import (
    ACTIVE_BUILD_STATUSES,
    App,
    Build,
    BuildLogLine,
    BuildStatus,
    Deployment,
)
from minipaas.db.session import get_session
from minipaas.runtime import get_runtime
from minipaas.runtime.base import RuntimeFailure
from minipaas.runtime.builder import (
    BuildResult,
    BuildSpec,
    build_image,
    build_network,
    build_triggers,
    close_build_networks,
    free_disk_mb,
    remove_build_tag,
    remove_failed_steps,
)
from minipaas.runtime.docker_runtime import DockerRuntime
from minipaas.services.builds import base_images, naming, records
from minipaas.services.builds.context import checked_dockerfile
from minipaas.services.deployments import records as deployments
from minipaas.services.errors import ServiceError

log = logging.getLogger(__name__)

# A stored log line longer than this is cut (a minified file printed by a step)
MAX_LINE_CHARS = 4000
# What one build's log may hold in the database; later lines are dropped, said in one line.
# A step printing without end would otherwise fill PostgreSQL's disk for every app
MAX_LOG_BYTES = 16 * 1024 * 1024


def run_build(build_id: int) -> None:
    """Carries out a queued build; every outcome ends in the build's row."""
    settings = get_settings()
    with get_session() as db:
        # Locked: a job queued twice (the reconciler re-queues one Redis seemed to lose) is
        # taken by one builder only
        build = db.get(Build, build_id, with_for_update=True)
        if build is None or build.status is not BuildStatus.QUEUED:
            return  # cancelled while queued, or already run
        build.status = BuildStatus.RUNNING
        build.started_at = now()
        app_id, number = build.app_id, build.number
        dockerfile, build_args = build.dockerfile, dict(build.build_args or {})
        db.commit()
    context = records.context_path(settings, build_id)
    started = time.monotonic()
    try:
        low = short_of_disk(settings, get_runtime())
        if low is not None:
            _finish(build_id, BuildResult(image_id=None, error=low), started)
            return
        if not context.exists():
            _finish(build_id, BuildResult(None, error="the uploaded context is gone"), started)
            return
        runtime = get_runtime()
        spec = BuildSpec(
            context=context,
            tag=naming.build_tag(settings, app_id, number),
            dockerfile=dockerfile,
            build_args=build_args,
            memory_mb=settings.build_memory_mb,
            cpus=settings.build_cpus,
            pids=settings.build_pids,
            timeout_seconds=settings.build_timeout_seconds,
        )
        deadline = started + settings.build_timeout_seconds
        writer = _LogWriter(build_id)
        try:
            needed = _prepare(runtime, context, dockerfile, build_args)
        except ServiceError as refused:  # the Dockerfile, or an image it names
            _finish(build_id, BuildResult(None, error=refused.message), started)
            return
        key = naming.build_key(settings, build_id)
        with build_network(runtime, key, needed=needed) as network:
            result = build_image(
                runtime,
                spec,
                network=network,
                on_lines=writer.write,
                stop_reason=lambda: _stop_reason(build_id, deadline),
            )
            # Recorded, and its deployment asked for, before the network goes (~0.2 s)
            _finish(build_id, result, started, tag=spec.tag)
        if result.leftover_image is not None:
            # After the network went with the failed step's container, which stood on it;
            # beside the next job: it may wait for builds running elsewhere on the host
            threading.Thread(
                target=remove_failed_steps,
                args=(runtime, result.leftover_image),
                name="failed-build-steps",
                daemon=True,
            ).start()
    except Exception as exc:
        log.exception("build %s failed", build_id)
        _finish(build_id, BuildResult(None, error=f"the build could not run: {exc}"), started)
    finally:
        context.unlink(missing_ok=True)


def _prepare(
    runtime: DockerRuntime, context: Path, dockerfile: str, build_args: dict[str, str]
) -> bool:
    """Pins the Dockerfile the engine reads to the ids its images have now (appended to the
    context: the engine reads the last entry of a path), after holding their ONBUILD
    triggers to the rules; True when the build may run a step (a RUN or ONBUILD of its own,
    or a base image's trigger): only then is its network made (~0.1 s). Raises
    InvalidRequest for what the builder may not build."""
    text = checked_dockerfile(context, dockerfile)
    pinned, images = base_images.pin_images(text, build_args, runtime.image_id)
    runs = base_images.runs_steps(text)
    for found in images:
        if not found.image.from_line:
            continue
        triggers = build_triggers(runtime, found.image_id)
        if triggers is None:  # removed since it was pinned: the build fails at its FROM
            triggers = []
        base_images.check_triggers(found.image, triggers)
        runs = runs or bool(triggers)
    data = pinned.encode()
    entry = tarfile.TarInfo(dockerfile)
    entry.size, entry.mode = len(data), 0o644
    with tarfile.open(context, mode="a") as archive:
        archive.addfile(entry, io.BytesIO(data))
    return runs


def short_of_disk(settings: Settings, runtime: DockerRuntime) -> str | None:
    """Why a build may not start, or go on: less than BUILD_MIN_FREE_DISK_MB free where the
    uploads or the engine's images live. Checked before a build and twice a second during it,
    as the classic builder bounds no step's disk (a step writing without end would otherwise
    fill the disk PostgreSQL and every app share)."""
    for where, free in free_disk_mb(runtime, settings.data_dir).items():
        if free < settings.build_min_free_disk_mb:
            return (
                f"only {free} MB free in {where}; builds need BUILD_MIN_FREE_DISK_MB "
                f"({settings.build_min_free_disk_mb} MB): free some disk and build again"
            )
    return None


def _stop_reason(build_id: int, deadline: float) -> str | None:
    settings = get_settings()
    if time.monotonic() > deadline:
        seconds = settings.build_timeout_seconds
        return f"the build took longer than BUILD_TIMEOUT_SECONDS ({seconds} s) and was stopped"
    low = short_of_disk(settings, get_runtime())
    if low is not None:
        return f"the build was stopped: {low}"
    with get_session() as db:
        found = db.execute(select(Build.cancel_requested_at).where(Build.id == build_id)).first()
    if found is None:
        return "the app was deleted"
    return "cancelled" if found[0] is not None else None


class _LogWriter:
    """Appends the build's lines, numbered from 1, in the order they came."""

    def __init__(self, build_id: int) -> None:
        self.build_id = build_id
        with get_session() as db:  # a build that ran before (a retried job) continues its log
            count, stored = db.execute(
                select(
                    func.max(BuildLogLine.line),
                    func.coalesce(func.sum(func.octet_length(BuildLogLine.text)), 0),
                ).where(BuildLogLine.build_id == build_id)
            ).one()
        self.count: int = count or 0
        self.bytes: int = int(stored)
        self.full = self.bytes > MAX_LOG_BYTES

    def write(self, lines: list[str]) -> None:
        rows = []
        for text in lines:
            if self.full:
                continue
            # PostgreSQL text cannot hold NUL, which a step's binary output may have
            kept = text[:MAX_LINE_CHARS].replace("\x00", "\\x00")
            self.bytes += len(kept.encode(errors="replace"))
            if self.bytes > MAX_LOG_BYTES:
                self.full = True
                kept = (
                    f"[the build's log is over {MAX_LOG_BYTES // (1024 * 1024)} MB: "
                    "later lines are not kept; the build goes on]"
                )
            self.count += 1
            rows.append({"build_id": self.build_id, "line": self.count, "text": kept})
        if not rows:
            return
        with get_session() as db:
            db.execute(insert(BuildLogLine), rows)
            db.commit()


def _finish(build_id: int, result: BuildResult, started: float, *, tag: str | None = None) -> None:
    with get_session() as db:
        build = db.get(Build, build_id)
        if build is None:  # the app was deleted meanwhile: its image goes too
            if result.image_id is not None and tag is not None:
                remove_build_tag(get_runtime(), tag, last_chance=True)
            return
        build.finished_at = now()
        build.duration_seconds = round(time.monotonic() - started, 3)
        if result.image_id is None:
            build.status = (
                BuildStatus.CANCELLED if result.stopped == "cancelled" else (BuildStatus.FAILED)
            )
            build.error = result.error
            build.failed_step = result.failed_step
            db.commit()
            return
        build.status = BuildStatus.SUCCEEDED
        build.image_id = result.image_id
        build.image_tag = tag
        db.commit()
        if build.deploy_on_success and tag is not None:
            _deploy(build_id, tag)


def _deploy(build_id: int, tag: str) -> None:
    """The app runs the new image from now on, through the normal health-gated deploy (so it
    becomes a release, and rollbacks work as for any image)."""
    with get_session() as db:
        build = db.get(Build, build_id)
        assert build is not None
        app = db.scalar(select(App).where(App.id == build.app_id).with_for_update())
        if app is None:
            return
        # Not committed alone: if the deployment is refused, the app keeps its image
        app.image = tag

        def link(deployment: Deployment) -> None:
            # In the deployment's own transaction: a builder killed right after it cannot
            # leave the build looking undeployed (deploy_undeployed would deploy it again)
            assert build is not None
            build.deployment_id = deployment.id

        try:
            deployments.request_deployment(db=db, app_id=app.id, recorded=link)
        except ServiceError as exc:
            db.rollback()
            build = db.get(Build, build_id)
            assert build is not None
            build.error = f"built, but not deployed: {exc.message}"
            db.commit()


def deploy_undeployed(build_id: int) -> bool:
    """A build that succeeded but whose builder died before it asked for the deployment:
    deployed now if it is still the app's newest build, else said so. True if it acted."""
    with get_session() as db:
        build = db.get(Build, build_id, with_for_update=True)
        if build is None or build.deployment_id is not None or build.error is not None:
            return False
        newest = db.scalar(select(func.max(Build.number)).where(Build.app_id == build.app_id))
        tag = build.image_tag
        if newest != build.number or tag is None:
            build.error = "built, but not deployed: a newer build came meanwhile"
            db.commit()
            return True
    _deploy(build_id, tag)
    return True


def end_abandoned_build(build_id: int, reason: str) -> bool:
    """Fails a build that is still queued or running; True if it did."""
    with get_session() as db:
        build = db.get(Build, build_id, with_for_update=True)
        if build is None or build.status not in ACTIVE_BUILD_STATUSES:
            return False
        build.status = BuildStatus.FAILED
        build.error = reason
        build.finished_at = now()
        db.commit()
    # Its steps run on unwatched otherwise: they are the containers on the build's network
    # (an engine that cannot be asked now: remove_leftover_build_networks tries again)
    with contextlib.suppress(RuntimeFailure, OSError):
        close_build_networks(get_runtime(), naming.build_key(get_settings(), build_id))
    records.context_path(get_settings(), build_id).unlink(missing_ok=True)
    return True
