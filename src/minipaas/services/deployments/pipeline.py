"""How a deploy goes, in the worker: begin, image, start, ready, switch, finish.

Runs under the app's advisory lock. Any failure before the switch removes the new container
and leaves the old one serving; see outcome.mark_failed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import select, update

from minipaas.clock import now
from minipaas.config import get_settings
from minipaas.db.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    App,
    AppStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    RunSettings,
)
from minipaas.db.session import database_unavailable, get_session
from minipaas.runtime import (
    ContainerSpec,
    ImageUnavailable,
    StartedContainer,
    container_name,
    get_runtime,
    platform_labels,
)
from minipaas.security import decrypt_env
from minipaas.services import routing
from minipaas.services.app_lock import app_lock
from minipaas.services.deployments import outcome, recovery
from minipaas.services.deployments.cancellation import pass_point_of_no_return, raise_if_cancelled
from minipaas.services.deployments.events import CollapsingReporter, record_event
from minipaas.services.deployments.outcome import DeploymentFailed, Serving
from minipaas.services.deployments.readiness import wait_until_ready
from minipaas.services.retry import retry_database, retry_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """One deployment: run these settings in a new container, replacing `previous`."""

    app_id: int
    deployment_id: int
    run: RunSettings
    pinned_image_id: str | None  # a rollback runs this exact image
    previous: Serving | None  # what serves the app now

    @property
    def image(self) -> str:
        return self.pinned_image_id or self.run.image

    @property
    def pull_policy(self) -> str:
        return "never" if self.pinned_image_id else str(self.run.pull_policy)

    @property
    def container_name(self) -> str:
        return container_name(get_settings(), self.app_id, self.deployment_id)


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


def run_deployment(deployment_id: int) -> None:
    """Carries out a deployment; always ends it as succeeded or failed."""
    with get_session() as db:
        app_id = db.scalar(select(Deployment.app_id).where(Deployment.id == deployment_id))
    if app_id is None:
        log.warning("deployment %s does not exist any more", deployment_id)
        return
    with app_lock(app_id):
        plan = begin(deployment_id)
        if plan is None:
            return
        timer = PhaseTimer()
        started: StartedContainer | None = None
        try:
            # A Docker engine that restarts is waited for; a bad image or a crash is not
            started = retry_transient(
                lambda: start_healthy_container(plan, timer),
                before_retry=lambda: raise_if_cancelled(deployment_id),
            )
            switch_route(plan, started)
            timer.mark("route")
        except BaseException as exc:  # also job timeouts and worker shutdowns
            end_failed(plan, exc, started)
            if not isinstance(exc, Exception):
                raise
            return
        finish(plan, started)
        timer.mark("finish")
        log.info("deployment %s succeeded: %s", deployment_id, timer.summary())


def end_failed(plan: Plan, exc: BaseException, started: StartedContainer | None) -> None:
    """Records the failure, waiting (bounded) for a database that went away to come back."""
    reason = outcome.describe(exc)
    if database_unavailable(exc):
        # Whether the last write (the switch, say) committed is unknown: end the deployment
        # from what the database says once it answers again
        retry_database(lambda: recovery.end_abandoned_deployment(plan.deployment_id, reason))
        return
    new_container = started.id if started else plan.container_name
    retry_database(
        lambda: outcome.mark_failed(
            plan.app_id, plan.deployment_id, reason, new_container=new_container
        )
    )


def begin(deployment_id: int) -> Plan | None:
    """Marks the deployment running; None when it already ended (a repeated job)."""
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        if deployment is None or deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
            return None
        if deployment.status is DeploymentStatus.RUNNING and deployment.container_id:
            # An earlier attempt died midway: start over from a clean slate
            get_runtime().remove(deployment.container_id)
        deployment.status = DeploymentStatus.RUNNING
        deployment.started_at = now()
        deployment.container_id = None
        db.add(
            DeploymentEvent(deployment_id=deployment_id, kind="started", message="worker started")
        )
        app = deployment.app
        app.status = AppStatus.DEPLOYING
        db.commit()
        return Plan(
            app_id=app.id,
            deployment_id=deployment_id,
            run=deployment.run_settings(),
            pinned_image_id=deployment.pinned_image_id,
            previous=Serving.of_app(app),
        )


def start_healthy_container(plan: Plan, timer: PhaseTimer) -> StartedContainer:
    image_id = ensure_image(plan)
    timer.mark("image")
    raise_if_cancelled(plan.deployment_id)
    started = start_container(plan, image_id)
    timer.mark("start")
    wait_until_healthy(plan, started)
    timer.mark("ready")
    return started


def ensure_image(plan: Plan) -> str:
    """Makes the image present per the pull policy; a rollback's image must still be here."""
    try:
        image_id = get_runtime().ensure_image(plan.image, plan.pull_policy)
    except ImageUnavailable:
        if plan.pinned_image_id:
            raise DeploymentFailed(
                f"the image of the release to roll back to ({plan.pinned_image_id[:19]}) is no "
                "longer on this host (only the last releases' images are kept)"
            ) from None
        raise
    # The step and its progress line in one commit: each commit is on the way to serving
    with get_session() as db:
        db.execute(
            update(Deployment)
            .where(Deployment.id == plan.deployment_id)
            .values(image_id=image_id, container_name=plan.container_name)
        )
        message = f"image {plan.image} is here ({image_id[:19]})"
        db.add(DeploymentEvent(deployment_id=plan.deployment_id, kind="image", message=message))
        db.commit()
    return image_id


def container_spec(plan: Plan) -> ContainerSpec:
    """The one place a deployment's run settings become a container's."""
    settings = get_settings()
    run = plan.run
    return ContainerSpec(
        name=plan.container_name,
        image=plan.image,
        internal_port=run.internal_port,
        command=run.command,
        env=decrypt_env(run.env_ciphertext),
        labels=platform_labels(settings, plan.app_id, plan.deployment_id),
        memory_mb=run.memory_mb,
        cpus=run.cpus,
        pids=run.pids,
    )


def start_container(plan: Plan, image_id: str) -> StartedContainer:
    started = get_runtime().run_container(container_spec(plan))
    with get_session() as db:
        db.execute(
            update(Deployment)
            .where(Deployment.id == plan.deployment_id)
            .values(container_id=started.id, published_port=started.published_port)
        )
        message = f"container {started.name} started on 127.0.0.1:{started.published_port}"
        db.add(DeploymentEvent(deployment_id=plan.deployment_id, kind="container", message=message))
        db.commit()
    return started


def wait_until_healthy(plan: Plan, started: StartedContainer) -> None:
    wait_until_ready(
        started,
        plan.run.health,
        check_cancelled=lambda: raise_if_cancelled(plan.deployment_id),
        report=CollapsingReporter(plan.deployment_id, "health"),
        internal_port=plan.run.internal_port,
    )
    # "healthy" is recorded with the route switch that follows, in its transaction


def switch_route(plan: Plan, started: StartedContainer) -> None:
    """The route goes to the new container; if nginx refuses, back to the previous one."""
    with get_session() as db:
        # One commit less before the app serves; a cancel seen here drops this line too
        db.add(
            DeploymentEvent(
                deployment_id=plan.deployment_id, kind="healthy", message="health check passed"
            )
        )
        pass_point_of_no_return(db, plan.deployment_id)
        app = db.get(App, plan.app_id)
        assert app is not None
        outcome.point_app_at(app, Serving.started(started))
        app.status = AppStatus.RUNNING  # the new container serves from this switch on
        db.commit()
    try:
        routing.publish_app_route(plan.app_id)
    except BaseException:
        with get_session() as db:
            app = db.get(App, plan.app_id)
            assert app is not None
            outcome.point_app_at(app, plan.previous)
            db.commit()
        raise
    record_event(plan.deployment_id, "route", "route switched to the new container")


def _drain(plan: Plan, port: int) -> None:
    """Requests the old container is still answering finish before it is stopped."""
    timeout = get_settings().drain_timeout_seconds
    left = routing.drain(port, timeout=timeout)
    if left:
        record_event(
            plan.deployment_id,
            "drain",
            f"{left} request(s) to the old container still open after {timeout:.0f} s "
            "(long-lived connections); stopping it anyway",
        )


def finish(plan: Plan, started: StartedContainer) -> None:
    """Retires the old container (best effort: the new one serves whatever happens here)."""
    previous = plan.previous
    if previous is not None and previous.container_id != started.id:
        runtime = get_runtime()
        try:
            if previous.published_port is not None:
                _drain(plan, previous.published_port)
            runtime.stop(previous.container_id)
            runtime.remove(previous.container_id)
        except Exception as exc:
            log.warning("old container %s not removed: %s", previous.container_id, exc)
        else:
            record_event(plan.deployment_id, "old-container", "old container stopped")
    retry_database(lambda: outcome.mark_succeeded(plan.app_id, plan.deployment_id))
