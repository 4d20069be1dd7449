"""Deployments: requested by the API, carried out by the worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from minipaas import metrics, queue, security
from minipaas.config import get_settings
from minipaas.db.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    App,
    AppStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    Release,
)
from minipaas.db.session import get_session
from minipaas.router.nginx import RouterError
from minipaas.runtime import (
    ContainerSpec,
    ContainerState,
    ImageUnavailable,
    RuntimeFailure,
    StartedContainer,
    container_name,
    get_runtime,
    platform_labels,
)
from minipaas.services import releases, routing
from minipaas.services.app_lock import app_lock
from minipaas.services.apps import get_app
from minipaas.services.errors import Conflict, NotFound, Unavailable
from minipaas.services.probe import http_status
from minipaas.services.retry import retry_transient

log = logging.getLogger(__name__)

DEPLOY_JOB = "minipaas.worker.jobs.deploy"
LOG_LINES_IN_ERRORS = 20


class PhaseTimer:
    """Where a deployment's time went, for the worker log."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.phases: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        current = time.monotonic()
        self.phases.append((phase, current - self._last))
        self._last = current

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self.phases)


class DeploymentFailed(Exception):
    """A deployment failed for a reason its owner can act on."""


def now() -> datetime:
    return datetime.now(UTC)


def record_event(deployment_id: int, kind: str, message: str) -> None:
    """One step of a deployment, for people watching it (`deploy`, the events stream)."""
    try:
        with get_session() as db:
            db.add(DeploymentEvent(deployment_id=deployment_id, kind=kind, message=message))
            db.commit()
    except SQLAlchemyError as exc:  # a lost progress line must not fail the deployment
        log.warning("event of deployment %s not recorded: %s", deployment_id, exc)


def list_events(
    *, db: Session, app_id: int, deployment_id: int, after: int
) -> Sequence[DeploymentEvent]:
    get_deployment(db=db, app_id=app_id, deployment_id=deployment_id)
    return db.scalars(
        select(DeploymentEvent)
        .where(DeploymentEvent.deployment_id == deployment_id, DeploymentEvent.id > after)
        .order_by(DeploymentEvent.id)
    ).all()


# --- API side ------------------------------------------------------------------------------


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


def request_deployment(*, db: Session, app_id: int, rollback_to: int | None = None) -> Deployment:
    """Records a queued deployment of the app's settings, then hands its id to the worker.

    With `rollback_to`, that release's settings and exact image run (0: the release before the
    current one); the app's settings become the release's only when the rollback succeeds.
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
    # What to run: the app's settings, or for a rollback those of the release
    source: App | Release = app
    pinned_image_id = None
    rollback_number = None
    if rollback_to is not None:
        release = releases.choose_release(db=db, app=app, number=rollback_to or None)
        releases.check_release_fits(db=db, app=app, release=release)
        source, pinned_image_id, rollback_number = release, release.image_id, release.number
    deployment = Deployment(
        app_id=app.id,
        app_status_before=app.status,
        status=DeploymentStatus.QUEUED,
        image=source.image,
        internal_port=source.internal_port,
        command=source.command,
        env_ciphertext=source.env_ciphertext,
        env_names=list(source.env_names or []),
        memory_mb=source.memory_mb,
        cpus=source.cpus,
        pids=source.pids,
        pull_policy=source.pull_policy,
        pinned_image_id=pinned_image_id,
        rollback_to_release=rollback_number,
    )
    db.add(deployment)
    app.status = AppStatus.DEPLOYING
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        active = active_deployment(db=db, app_id=app_id)
        which = f"deployment {active.id} is {active.status}" if active else "one is in progress"
        raise Conflict(
            f"app {app_id} is already being deployed ({which}); wait for it to end"
        ) from None
    try:
        job = queue.enqueue(
            DEPLOY_JOB,
            deployment.id,
            job_id=f"deploy-{deployment.id}",
            timeout=get_settings().deploy_timeout_seconds,
            on_failure=deploy_failure_callback(),
        )
    except queue.QueueUnavailable as exc:
        # Leave nothing stuck in "deploying": the deployment failed before it started
        deployment.status = DeploymentStatus.FAILED
        deployment.error = f"could not queue the deployment: {exc}"
        deployment.finished_at = now()
        app.status = deployment.app_status_before or AppStatus.CREATED
        db.commit()
        raise Unavailable(f"{exc}; the deployment was not started, try again later") from None
    deployment.job_id = job.id
    what = f"rollback to release {rollback_number}" if rollback_number else deployment.image
    db.add(DeploymentEvent(deployment_id=deployment.id, kind="queued", message=f"queued: {what}"))
    db.commit()
    return deployment


def deploy_failure_callback() -> Any:
    from rq import Callback

    return Callback("minipaas.worker.jobs.on_deploy_job_failure")


def cancel_deployment(*, db: Session, app_id: int, deployment_id: int) -> Deployment:
    """A queued deployment ends at once; a running one at the worker's next check."""
    deployment = db.scalar(
        select(Deployment)
        .where(Deployment.id == deployment_id, Deployment.app_id == app_id)
        .with_for_update()
    )
    if deployment is None:
        raise NotFound(f"deployment {deployment_id} of app {app_id} does not exist")
    if deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
        raise Conflict(f"deployment {deployment_id} already ended ({deployment.status})")
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


def _check_cancelled(deployment_id: int) -> None:
    with get_session() as db:
        requested = db.scalar(
            select(Deployment.cancel_requested_at).where(Deployment.id == deployment_id)
        )
    if requested is not None:
        raise DeploymentFailed("cancelled while it was running")


# --- worker side ---------------------------------------------------------------------------


@dataclass
class _Target:
    app_id: int
    deployment_id: int
    image: str
    internal_port: int
    command: list[str] | None
    env: dict[str, str]
    memory_mb: int
    cpus: float
    pids: int
    pull_policy: str
    health: HealthCheck
    old_container_id: str | None
    old_container_name: str | None
    old_published_port: int | None


def run_deployment(deployment_id: int) -> None:
    """Carries out a deployment; always ends it as succeeded or failed."""
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        if deployment is None:
            log.warning("deployment %s does not exist any more", deployment_id)
            return
        app_id = deployment.app_id
    with app_lock(app_id):
        target = _begin(deployment_id)
        if target is None:
            return
        started: StartedContainer | None = None
        timer = PhaseTimer()
        try:
            # A Docker engine that restarts is waited for; a bad image or a crash is not
            started = retry_transient(
                lambda: _start_container(target, timer),
                before_retry=lambda: _check_cancelled(target.deployment_id),
            )
            _switch_route(target, started)
            timer.mark("route")
            record_event(deployment_id, "route", f"route /apps/{target.app_id}/ switched")
        except BaseException as exc:  # also job timeouts and worker shutdowns
            _fail(target, started, _describe(exc))
            if not isinstance(exc, Exception):
                raise
            return
        _finish(target, started)
        timer.mark("finish")
        log.info("deployment %s succeeded: %s", deployment_id, timer.summary())


def _begin(deployment_id: int) -> _Target | None:
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        if deployment is None or deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
            return None  # already ended: a repeated job changes nothing
        app = deployment.app
        if deployment.status is DeploymentStatus.RUNNING and deployment.container_id:
            # An earlier attempt died midway: start over from a clean slate
            get_runtime().remove(deployment.container_id)
        deployment.status = DeploymentStatus.RUNNING
        deployment.started_at = now()
        db.add(
            DeploymentEvent(deployment_id=deployment.id, kind="started", message="worker started")
        )
        deployment.container_id = None
        app.status = AppStatus.DEPLOYING
        db.commit()
        # The deployment's own snapshot; rows from before snapshots fall back to the app
        return _Target(
            app_id=app.id,
            deployment_id=deployment.id,
            image=deployment.pinned_image_id or deployment.image,
            internal_port=deployment.internal_port,
            command=deployment.command,
            env=security.decrypt_env(
                deployment.env_ciphertext
                if deployment.env_names is not None
                else app.env_ciphertext
            ),
            memory_mb=deployment.memory_mb or app.memory_mb,
            cpus=deployment.cpus or app.cpus,
            pids=deployment.pids or app.pids,
            pull_policy=(
                "never"
                if deployment.pinned_image_id
                else str(deployment.pull_policy or app.pull_policy)
            ),
            health=HealthCheck(app.health_check_path, app.health_check_running_seconds),
            old_container_id=app.container_id,
            old_container_name=app.container_name,
            old_published_port=app.published_port,
        )


def _start_container(target: _Target, timer: PhaseTimer) -> StartedContainer:
    settings = get_settings()
    runtime = get_runtime()
    try:
        image_id = runtime.ensure_image(target.image, target.pull_policy)
    except ImageUnavailable:
        if target.image.startswith("sha256:"):
            raise DeploymentFailed(
                f"the image of the release to roll back to ({target.image[:19]}) is no longer "
                "on this host (only the last releases' images are kept)"
            ) from None
        raise
    timer.mark("image")
    record_event(target.deployment_id, "image", f"image {target.image} is here ({image_id[:19]})")
    _check_cancelled(target.deployment_id)
    name = container_name(settings, target.app_id, target.deployment_id)
    with get_session() as db:
        deployment = db.get(Deployment, target.deployment_id)
        assert deployment is not None
        deployment.image_id = image_id
        deployment.container_name = name
        db.commit()
    started = runtime.run_container(
        ContainerSpec(
            name=name,
            image=target.image,
            internal_port=target.internal_port,
            command=target.command,
            env=target.env,
            labels=platform_labels(settings, target.app_id, target.deployment_id),
            memory_mb=target.memory_mb,
            cpus=target.cpus,
            pids=target.pids,
        )
    )
    timer.mark("start")
    record_event(
        target.deployment_id,
        "container",
        f"container {started.name} started on 127.0.0.1:{started.published_port}",
    )
    with get_session() as db:
        deployment = db.get(Deployment, target.deployment_id)
        assert deployment is not None
        deployment.container_id = started.id
        deployment.published_port = started.published_port
        db.commit()
    wait_until_ready(started, target.deployment_id, target.health)
    timer.mark("ready")
    record_event(target.deployment_id, "healthy", "health check passed")
    runtime.enable_restarts(started.id)
    return started


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/"
    running_seconds: int | None = None  # instead of HTTP: running this long is healthy


def wait_until_ready(
    started: StartedContainer,
    deployment_id: int | None = None,
    health: HealthCheck | None = None,
) -> None:
    """Waits until the app is healthy: GET health.path answers below 500 (or it has run for
    health.running_seconds). Fails fast when the container exits or the deployment is
    cancelled, and after READY_TIMEOUT_SECONDS with the last answer and log lines."""
    settings = get_settings()
    runtime = get_runtime()
    health = health or HealthCheck()
    started_at = time.monotonic()
    patience = max(settings.ready_timeout_seconds, (health.running_seconds or 0) + 5)
    deadline = started_at + patience
    interval = settings.ready_poll_interval_seconds
    last_answer = "no HTTP answer"
    next_report = started_at
    while True:
        state = runtime.state(started.id)
        if state is None:
            raise DeploymentFailed("the container disappeared while starting (removed by hand?)")
        if not state.running or state.restart_count > 0:
            raise DeploymentFailed(exit_message(started.id, state))
        if deployment_id is not None:
            _check_cancelled(deployment_id)
        if health.running_seconds is not None:
            if time.monotonic() - started_at >= health.running_seconds:
                return
        else:
            status = http_status(started.published_port, path=health.path, timeout=1.0)
            if status is not None and status < 500:
                return
            if status is not None:
                last_answer = f"GET {health.path} answered {status}"
            if deployment_id is not None and time.monotonic() >= next_report:
                record_event(deployment_id, "health", f"waiting for health: {last_answer}")
                next_report = time.monotonic() + 2
        if time.monotonic() >= deadline:
            logs = runtime.tail_logs(started.id, LOG_LINES_IN_ERRORS)
            raise DeploymentFailed(
                f"the app did not become healthy within {patience:.0f} s "
                f"({last_answer}); check internal_port, health_check_path and that the app "
                f"listens on 0.0.0.0, not 127.0.0.1. Last log lines:\n{logs}"
            )
        time.sleep(interval)
        interval = min(interval * 1.3, 0.25)


def exit_message(container_id: str, state: ContainerState) -> str:
    logs = get_runtime().tail_logs(container_id, LOG_LINES_IN_ERRORS)
    if state.oom_killed:
        limit = f"{state.memory_limit_mb} MB" if state.memory_limit_mb else "its"
        reason = f"was killed for using more memory than its limit of {limit} (OOM)"
    else:
        reason = "exited"
    return (
        f"the container {reason} with code {state.exit_code}; last log lines:\n{logs or '(none)'}"
    )


def _switch_route(target: _Target, started: StartedContainer) -> None:
    with get_session() as db:
        app = db.get(App, target.app_id)
        assert app is not None
        app.container_id = started.id
        app.container_name = started.name
        app.published_port = started.published_port
        app.status = AppStatus.RUNNING  # the new container serves from this switch on
        db.commit()
    try:
        routing.publish_routes(drain=True)
    except BaseException:
        _restore_previous_container(target)
        raise


def _restore_previous_container(target: _Target) -> None:
    with get_session() as db:
        app = db.get(App, target.app_id)
        assert app is not None
        app.container_id = target.old_container_id
        app.container_name = target.old_container_name
        app.published_port = target.old_published_port
        db.commit()


def _finish(target: _Target, started: StartedContainer) -> None:
    runtime = get_runtime()
    # The route already points at the new container; the old one can go. Best effort: the new
    # one serves whatever happens here, so nothing below may turn this into a failed deploy.
    if target.old_container_id and target.old_container_id != started.id:
        try:
            runtime.stop(target.old_container_id)
            runtime.remove(target.old_container_id)
        except Exception as exc:
            log.warning("old container %s not removed: %s", target.old_container_id, exc)
        else:
            record_event(target.deployment_id, "old-container", "old container stopped")
    _mark_succeeded(target.app_id, target.deployment_id)


def _mark_succeeded(app_id: int, deployment_id: int) -> None:
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        app = db.get(App, app_id)
        assert deployment is not None and app is not None
        if deployment.rollback_to_release is not None:
            releases.adopt_deployment_settings(app, deployment)
        if deployment.release_number is None:
            releases.record_release(
                db, app, deployment, deployment.image_id or deployment.pinned_image_id or ""
            )
        deployment.status = DeploymentStatus.SUCCEEDED
        deployment.finished_at = now()
        deployment.duration_seconds = _duration(deployment)
        _count("succeeded", deployment.duration_seconds)
        db.add(
            DeploymentEvent(
                deployment_id=deployment.id,
                kind="succeeded",
                message=f"succeeded: release {deployment.release_number}",
            )
        )
        app.status = AppStatus.RUNNING
        app.status_detail = None
        app.current_deployment_id = deployment.id
        db.commit()


def _fail(target: _Target, started: StartedContainer | None, message: str) -> None:
    runtime = get_runtime()
    try:
        runtime.remove(
            started.id
            if started is not None
            else container_name(get_settings(), target.app_id, target.deployment_id)
        )
    except RuntimeFailure as exc:  # the record below matters more; the reconciler tidies up
        log.warning("new container of deployment %s not removed: %s", target.deployment_id, exc)
    with get_session() as db:
        deployment = db.get(Deployment, target.deployment_id)
        app = db.get(App, target.app_id)
        if deployment is None or app is None:
            return  # the app was deleted meanwhile
        deployment.status = DeploymentStatus.FAILED
        deployment.error = message
        deployment.finished_at = now()
        deployment.duration_seconds = _duration(deployment)
        _count("failed", deployment.duration_seconds)
        db.add(
            DeploymentEvent(
                deployment_id=deployment.id, kind="failed", message=f"failed: {message}"
            )
        )
        app.status = _status_after_failure(app)
        if app.status is AppStatus.FAILED:
            app.status_detail = f"deployment {deployment.id} failed: {message.splitlines()[0]}"
        db.commit()
    # The deploy may have changed what the router shows meanwhile: render the truth again
    routing.publish_routes_best_effort()


def _status_after_failure(app: App) -> AppStatus:
    """A failed deploy leaves the previous container in charge if there is one."""
    if app.container_id is None:
        return AppStatus.FAILED
    try:
        state = get_runtime().state(app.container_id)
    except RuntimeFailure:
        return AppStatus.RUNNING  # cannot ask the engine: the reconciler checks it later
    if state is not None and state.running:
        return AppStatus.RUNNING
    return AppStatus.STOPPED if state is not None else AppStatus.FAILED


def fail_abandoned_deployment(deployment_id: int, reason: str, take_lock: bool = False) -> None:
    """Ends a deployment whose job died without ending it (the worker was killed)."""
    if take_lock:
        with get_session() as db:
            found = db.get(Deployment, deployment_id)
            app_id = found.app_id if found is not None else None
        if app_id is None:
            return
        with app_lock(app_id):
            fail_abandoned_deployment(deployment_id, reason)
        return
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        if deployment is None or deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
            return
        app_id = deployment.app_id
        container_id = deployment.container_id
        app = deployment.app
        old_container_id = app.container_id
        previous = (
            db.get(Deployment, app.current_deployment_id) if app.current_deployment_id else None
        )
    target = _Target(
        app_id=app_id,
        deployment_id=deployment_id,
        image="",
        internal_port=0,
        command=None,
        env={},
        memory_mb=0,
        cpus=0,
        pids=0,
        pull_policy="never",
        health=HealthCheck(),
        old_container_id=previous.container_id if previous else None,
        old_container_name=previous.container_name if previous else None,
        old_published_port=previous.published_port if previous else None,
    )
    if container_id and container_id == old_container_id:
        state = get_runtime().state(container_id)
        if state is not None and state.running:
            # It died after the switch: the new container serves, so the deploy did succeed
            _mark_succeeded(app_id, deployment_id)
            return
        # The switched-to container is gone: point back at the old one
        _restore_previous_container(target)
    _fail(target, None, reason)
    if container_id:
        get_runtime().remove(container_id)
    routing.publish_routes_best_effort()


def _count(outcome: str, duration: float | None) -> None:
    metrics.DEPLOYMENTS.labels(outcome).inc()
    if duration is not None:
        metrics.DEPLOYMENT_DURATION.labels(outcome).observe(duration)


def _duration(deployment: Deployment) -> float | None:
    if deployment.started_at is None or deployment.finished_at is None:
        return None
    return round((deployment.finished_at - deployment.started_at).total_seconds(), 3)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DeploymentFailed | RuntimeFailure):
        return str(exc)
    if isinstance(exc, RouterError):
        return f"the route could not be switched: {exc}"
    name = type(exc).__name__
    if name == "JobTimeoutException":
        return (
            f"the deployment passed its deadline of {get_settings().deploy_timeout_seconds} s "
            "and was stopped"
        )
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return "the worker shut down during the deployment; deploy again"
    log.exception("deployment failed unexpectedly")
    return f"internal error while deploying ({name}: {exc}); see the worker log"
