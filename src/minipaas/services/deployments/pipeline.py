"""How a deploy goes, in the worker: begin, image, start, ready, switch, finish.

Runs under the app's advisory lock. The app's N replicas start side by side and are
health-gated each; the route then goes to the whole new set in one write. Any failure before
the switch removes every new container and leaves the old set serving; see outcome.mark_failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
from minipaas.db.session import database_unavailable, get_session, read_engine
from minipaas.runtime import (
    ContainerSpec,
    Endpoint,
    EngineUnavailable,
    ImageUnavailable,
    RuntimeFailure,
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
from minipaas.services.deployments.outcome import DeploymentFailed, ServingSet
from minipaas.services.deployments.readiness import wait_until_ready
from minipaas.services.retry import retry_database, retry_transient

log = logging.getLogger(__name__)

# How long a failed start waits for the image's record, written beside it, to land first
IMAGE_RECORD_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Plan:
    """One deployment: run these settings in `replicas` new containers, replacing `previous`."""

    app_id: int
    deployment_id: int
    run: RunSettings
    pinned_image_id: str | None  # a rollback runs this exact image
    previous: ServingSet  # what serves the app now
    replicas: int = 1

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
    # On the autocommit pool: one round trip, no BEGIN and ROLLBACK around it
    with read_engine().connect() as connection:
        app_id = connection.scalar(select(Deployment.app_id).where(Deployment.id == deployment_id))
    if app_id is None:
        log.warning("deployment %s does not exist any more", deployment_id)
        return
    with app_lock(app_id):
        plan = begin(deployment_id)
        if plan is None:
            return
        timer = PhaseTimer()
        started: list[StartedContainer] = []
        try:
            # A Docker engine that restarts is waited for; a bad image or a crash is not
            started = retry_transient(
                lambda: start_healthy_set(plan, timer),
                before_retry=lambda: raise_if_cancelled(deployment_id),
            )
            switch_route(plan, started)
            timer.mark("route")
        except BaseException as exc:  # also job timeouts and worker shutdowns
            end_failed(plan, exc, started[0] if started else None)
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
        if deployment.status is DeploymentStatus.RUNNING and deployment.route_switched_at:
            # An earlier attempt switched the route and died: its container serves the app,
            # so starting over would remove it. End it as its worker would have
            db.close()
            recovery.end_abandoned_deployment(
                deployment_id, "the worker running this deployment stopped after the switch"
            )
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
        # Read before the commit: in its transaction, not in one more of its own
        plan = Plan(
            app_id=app.id,
            deployment_id=deployment_id,
            run=deployment.run_settings(),
            pinned_image_id=deployment.pinned_image_id,
            previous=ServingSet.of_app(app),
            # Replicas are the app's formation, not part of the release: what it is set to now
            replicas=app.replicas,
        )
        db.commit()
        return plan


def start_healthy_set(plan: Plan, timer: PhaseTimer) -> list[StartedContainer]:
    """Starts every replica side by side and waits until each is healthy; on any failure
    removes all of them and raises the first replica's reason."""
    image_id = ensure_image(plan)
    timer.mark("image")
    raise_if_cancelled(plan.deployment_id)
    # The image's record commits while the engine starts the containers, not before: ~6 ms
    # less until the app serves. Each container's record waits for it (events stay in order).
    # A failed start waits a moment for it too, but never for good: the job's timeout, raised
    # in this thread only, must not wait on a write stuck in another
    recorder = ThreadPoolExecutor(max_workers=1)
    image_recorded = recorder.submit(record_image, plan, image_id)
    image_recorded.add_done_callback(_log_unrecorded_image)
    try:
        return _start_healthy(plan, image_id, image_recorded, timer)
    except BaseException:
        wait([image_recorded], timeout=IMAGE_RECORD_WAIT_SECONDS)
        raise
    finally:
        recorder.shutdown(wait=False)


def _log_unrecorded_image(recorded: Future[None]) -> None:
    if not recorded.cancelled() and (exc := recorded.exception()) is not None:
        log.warning("the image step's record was not written: %s", exc)


def _start_healthy(
    plan: Plan, image_id: str, image_recorded: Future[None], timer: PhaseTimer
) -> list[StartedContainer]:
    if plan.replicas == 1:
        only = start_container(plan, image_id, image_recorded=image_recorded)
        timer.mark("start")
        try:
            wait_until_healthy(plan, only)
        except BaseException:
            _remove_quietly([only.id])
            raise
        timer.mark("ready")
        return [only]
    # One failed replica stops the others' waiting: the deploy fails now, not after them
    abort = threading.Event()
    with ThreadPoolExecutor(max_workers=min(plan.replicas, 8)) as pool:
        futures = [
            pool.submit(_start_one_replica, plan, image_id, replica, abort, image_recorded)
            for replica in range(plan.replicas)
        ]
        outcomes: list[StartedContainer | BaseException] = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except BaseException as exc:
                if not future.done():
                    # Raised in this thread (the job's timeout), not by the replica: stop the
                    # others' waiting now, not after their readiness timeouts
                    abort.set()
                    raise
                outcomes.append(exc)
    started = [item for item in outcomes if isinstance(item, StartedContainer)]
    failures = [item for item in outcomes if not isinstance(item, StartedContainer)]
    # The replica that failed first, not one that stopped waiting because of it
    failures.sort(key=lambda failure: isinstance(failure, _SiblingFailed))
    if failures:
        # All or nothing: the old set keeps serving alone
        _remove_quietly([container.id for container in started])
        failure = failures[0]
        index = outcomes.index(failure)
        # The owner's reasons name the replica; an engine that went away stays retryable
        owners = isinstance(failure, DeploymentFailed | RuntimeFailure)
        transient = isinstance(failure, EngineUnavailable)
        if owners and not transient and not str(failure).startswith("cancelled"):
            raise DeploymentFailed(f"replica {index}: {failure}") from failure
        raise failure
    timer.mark("start+ready")
    return started


class _SiblingFailed(DeploymentFailed):
    """Another replica of the same deploy failed: this one stopped waiting."""


def _start_one_replica(
    plan: Plan,
    image_id: str,
    replica: int,
    abort: threading.Event,
    image_recorded: Future[None],
) -> StartedContainer:
    def check() -> None:
        raise_if_cancelled(plan.deployment_id)
        if abort.is_set():
            raise _SiblingFailed("another replica failed")

    try:
        check()
        started = start_container(plan, image_id, replica, image_recorded=image_recorded)
        try:
            wait_until_healthy(plan, started, replica, check_cancelled=check)
        except BaseException:
            _remove_quietly([started.id])
            raise
    except BaseException:
        abort.set()
        raise
    return started


def _remove_quietly(container_ids: list[str]) -> None:
    runtime = get_runtime()
    for container_id in container_ids:
        try:
            runtime.remove(container_id)
        except Exception as exc:  # the failure matters more; the reconciler tidies up
            log.warning("new container %s not removed: %s", container_id[:12], exc)


def ensure_image(plan: Plan) -> str:
    """Makes the image present per the pull policy; a rollback's image must still be here."""
    try:
        return get_runtime().ensure_image(plan.image, plan.pull_policy)
    except ImageUnavailable:
        if plan.pinned_image_id:
            raise DeploymentFailed(
                f"the image of the release to roll back to ({plan.pinned_image_id[:19]}) is no "
                "longer on this host (only the last releases' images are kept)"
            ) from None
        raise


def record_image(plan: Plan, image_id: str) -> None:
    """The image step and its progress line, in one commit."""
    with get_session() as db:
        db.execute(
            update(Deployment)
            .where(Deployment.id == plan.deployment_id)
            .values(image_id=image_id, container_name=plan.container_name)
        )
        message = f"image {plan.image} is here ({image_id[:19]})"
        db.add(DeploymentEvent(deployment_id=plan.deployment_id, kind="image", message=message))
        db.commit()


def container_spec(plan: Plan, replica: int = 0) -> ContainerSpec:
    """The one place a deployment's run settings become a container's."""
    return replica_spec(
        app_id=plan.app_id,
        deployment_id=plan.deployment_id,
        run=plan.run,
        image=plan.image,
        replica=replica,
    )


def replica_spec(
    *, app_id: int, deployment_id: int, run: RunSettings, image: str, replica: int
) -> ContainerSpec:
    """A container of this deployment's settings (a scale adds replicas with it too)."""
    settings = get_settings()
    return ContainerSpec(
        name=container_name(settings, app_id, deployment_id, replica),
        image=image,
        internal_port=run.internal_port,
        command=run.command,
        env=decrypt_env(run.env_ciphertext),
        labels=platform_labels(settings, app_id, deployment_id, replica),
        memory_mb=run.memory_mb,
        cpus=run.cpus,
        pids=run.pids,
    )


def start_container(
    plan: Plan, image_id: str, replica: int = 0, *, image_recorded: Future[None]
) -> StartedContainer:
    started = get_runtime().run_container(container_spec(plan, replica))
    try:
        image_recorded.result()  # its line comes first; a database gone away fails here
    except BaseException:
        _remove_quietly([started.id])
        raise
    with get_session() as db:
        if replica == 0:  # the deployment row names the first replica's container
            db.execute(
                update(Deployment)
                .where(Deployment.id == plan.deployment_id)
                .values(
                    container_id=started.id,
                    published_port=started.published_port,
                    published_address=started.address,
                )
            )
        message = f"container {started.name} started on {started.endpoint}"
        db.add(DeploymentEvent(deployment_id=plan.deployment_id, kind="container", message=message))
        db.commit()
    return started


def wait_until_healthy(
    plan: Plan,
    started: StartedContainer,
    replica: int = 0,
    *,
    check_cancelled: Callable[[], None] | None = None,
) -> None:
    kind = "health" if plan.replicas == 1 else f"health r{replica}"
    wait_until_ready(
        started,
        plan.run.health,
        check_cancelled=check_cancelled or (lambda: raise_if_cancelled(plan.deployment_id)),
        report=CollapsingReporter(plan.deployment_id, kind[:32]),
        internal_port=plan.run.internal_port,
    )
    # "healthy" is recorded with the route switch that follows, in its transaction


def switch_route(plan: Plan, started: list[StartedContainer]) -> None:
    """The route goes to the new set in one write; if nginx refuses, back to the previous."""
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
        outcome.point_app_at_set(app, ServingSet.started(started))
        app.status = AppStatus.RUNNING  # the new set serves from this switch on
        db.commit()
    try:
        routing.publish_app_route(plan.app_id)
    except BaseException:
        with get_session() as db:
            app = db.get(App, plan.app_id)
            assert app is not None
            outcome.point_app_at_set(app, plan.previous)
            db.commit()
        raise
    what = "the new container" if len(started) == 1 else f"the {len(started)} new replicas"
    record_event(plan.deployment_id, "route", f"route switched to {what}")


def _drain(plan: Plan, endpoints: list[Endpoint]) -> None:
    """Requests the old containers are still answering finish before they are stopped."""
    timeout = get_settings().drain_timeout_seconds
    left = routing.drain_all(endpoints, timeout=timeout)
    if left:
        record_event(
            plan.deployment_id,
            "drain",
            f"{left} request(s) to the old container still open after {timeout:.0f} s "
            "(long-lived connections); stopping it anyway",
        )


def finish(plan: Plan, started: list[StartedContainer]) -> None:
    """Retires the old set (best effort: the new one serves whatever happens here)."""
    new_ids = {container.id for container in started}
    old = [serving for serving in plan.previous.all if serving.container_id not in new_ids]
    if old:
        try:
            _drain(plan, [s.endpoint for s in old if s.endpoint is not None])
            with ThreadPoolExecutor(max_workers=min(len(old), 8)) as pool:
                # Stops run side by side: an app that ignores SIGTERM costs one grace period
                list(pool.map(lambda s: _retire(s.container_id), old))
        except Exception as exc:
            log.warning("old containers of app %s not all removed: %s", plan.app_id, exc)
        else:
            what = f"{len(old)} old containers stopped" if len(old) > 1 else "old container stopped"
            record_event(plan.deployment_id, "old-container", what)
    retry_database(lambda: outcome.mark_succeeded(plan.app_id, plan.deployment_id))


def _retire(container_id: str) -> None:
    runtime = get_runtime()
    runtime.stop(container_id)
    runtime.remove(container_id)
