"""How a deployment ends: succeeded (a release is recorded) or failed (with the reason)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.orm import object_session

from minipaas import metrics
from minipaas.clock import now
from minipaas.config import get_settings
from minipaas.db.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    App,
    AppReplica,
    AppStatus,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
)
from minipaas.db.session import database_unavailable, get_session, outage_detail
from minipaas.router.errors import RouterError
from minipaas.runtime import Endpoint, RuntimeFailure, StartedContainer, get_runtime
from minipaas.services import releases, routing
from minipaas.services.endpoints import endpoint_of, set_endpoint

log = logging.getLogger(__name__)


class DeploymentFailed(Exception):
    """A deployment failed for a reason its owner can act on."""


def mark_succeeded(app_id: int, deployment_id: int) -> None:
    """The new container serves: record the release and make it the app's current one."""
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        app = db.get(App, app_id)
        assert deployment is not None and app is not None
        if deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
            return  # ended already: a retry after a commit whose answer was lost
        if deployment.rollback_to_release is not None:
            # The app's settings are what runs now, so the next plain deploy does not
            # silently bring back the settings that were rolled away from
            app.set_run_settings(deployment.run_settings())
        if deployment.release_number is None:
            releases.record_release(db, app, deployment)
        _end(deployment, DeploymentStatus.SUCCEEDED)
        db.add(
            DeploymentEvent(
                deployment_id=deployment.id,
                kind="succeeded",
                message=f"succeeded: release {deployment.release_number}",
            )
        )
        app.status = AppStatus.RUNNING
        app.status_detail = None
        app.forget_crashes()
        app.current_deployment_id = deployment.id
        db.commit()


def mark_failed(app_id: int, deployment_id: int, message: str, *, new_container: str) -> None:
    """Removes the deployment's new container, records why it failed, republishes routes.

    Safe to run again (a retry while the database comes back): an ended deployment is left
    as it is, with its container.
    """
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        app = db.get(App, app_id)
        if deployment is not None and deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
            return
        _remove_new_container(deployment_id, new_container)
        if deployment is None or app is None:
            return  # the app was deleted meanwhile
        _remove_other_replicas(app, deployment_id)
        deployment.error = message
        _end(deployment, DeploymentStatus.FAILED)
        db.add(
            DeploymentEvent(
                deployment_id=deployment.id, kind="failed", message=f"failed: {message}"
            )
        )
        app.status = _status_after_failure(app, deployment.app_status_before)
        if app.status is AppStatus.FAILED:
            app.status_detail = f"deployment {deployment.id} failed: {message.splitlines()[0]}"
        db.commit()
    # The deploy may have changed what the router shows meanwhile: render the truth again
    routing.publish_app_route_best_effort(app_id)


def _remove_other_replicas(app: App, deployment_id: int) -> None:
    """Every other container this deployment started goes too (a failed deploy leaves none),
    and the app forgets any of them it was pointed at (a recovery after the switch)."""
    runtime = get_runtime()
    try:
        ids = runtime.platform_container_ids(app.id, deployment_id)
    except RuntimeFailure as exc:
        log.warning("containers of deployment %s not listed: %s", deployment_id, exc)
        return
    for replica in list(app.extra_replicas):
        if replica.container_id in ids:
            app.extra_replicas.remove(replica)
    for container_id in ids:
        if container_id != app.container_id:
            _remove_new_container(deployment_id, container_id)


def _remove_new_container(deployment_id: int, container: str) -> None:
    try:
        get_runtime().remove(container)
    except RuntimeFailure as exc:  # the record matters more; the reconciler tidies up
        log.warning("new container of deployment %s not removed: %s", deployment_id, exc)


def _end(deployment: Deployment, status: DeploymentStatus) -> None:
    deployment.status = status
    deployment.finished_at = now()
    started = deployment.started_at
    duration = None if started is None else (deployment.finished_at - started).total_seconds()
    deployment.duration_seconds = None if duration is None else round(duration, 3)
    metrics.DEPLOYMENTS.labels(status.value).inc()
    if duration is not None:
        metrics.DEPLOYMENT_DURATION.labels(status.value).observe(duration)


def _status_after_failure(app: App, before: AppStatus | None) -> AppStatus:
    """A failed deploy leaves the previous container in charge if there is one; if it was
    meant to run but is down, the healer starts it again (crashed, due at once)."""
    if app.container_id is None:
        return AppStatus.FAILED
    try:
        state = get_runtime().state(app.container_id)
    except RuntimeFailure:
        return AppStatus.RUNNING  # cannot ask the engine: the reconciler checks it later
    if state is not None and state.running:
        return AppStatus.RUNNING
    if state is None:
        return AppStatus.FAILED
    return (
        AppStatus.CRASHED if before in (AppStatus.RUNNING, AppStatus.CRASHED) else AppStatus.STOPPED
    )


def describe(exc: BaseException) -> str:
    """What the owner reads in `error`; unexpected failures are logged with their traceback."""
    if isinstance(exc, DeploymentFailed | RuntimeFailure):
        return str(exc)
    if isinstance(exc, RouterError):
        return f"the route could not be switched: {exc}"
    if database_unavailable(exc):
        return f"the database went away during the deployment ({outage_detail(exc)}); deploy again"
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


@dataclass(frozen=True)
class Serving:
    """The container an app's route points at."""

    container_id: str
    container_name: str | None
    endpoint: Endpoint | None

    @classmethod
    def of_app(cls, app: App) -> Serving | None:
        if app.container_id is None:
            return None
        return cls(app.container_id, app.container_name, endpoint_of(app))

    @classmethod
    def of_replica(cls, replica: AppReplica) -> Serving:
        return cls(replica.container_id, replica.container_name, endpoint_of(replica))

    @classmethod
    def started(cls, container: StartedContainer) -> Serving:
        return cls(container.id, container.name, container.endpoint)


def point_app_at(app: App, serving: Serving | None) -> None:
    app.container_id = serving.container_id if serving else None
    app.container_name = serving.container_name if serving else None
    set_endpoint(app, serving.endpoint if serving else None)
    app.unhealthy_since = None  # a new container: the prober judges it afresh


@dataclass(frozen=True)
class ServingSet:
    """All of an app's replicas: the first on the app's row, the others as AppReplica rows."""

    first: Serving | None
    others: tuple[Serving, ...] = field(default=())

    @property
    def all(self) -> list[Serving]:
        return ([self.first] if self.first else []) + list(self.others)

    @classmethod
    def of_app(cls, app: App) -> ServingSet:
        others = tuple(Serving.of_replica(r) for r in app.extra_replicas)
        return cls(Serving.of_app(app), others)

    @classmethod
    def started(cls, containers: list[StartedContainer]) -> ServingSet:
        return cls(
            Serving.started(containers[0]), tuple(Serving.started(c) for c in containers[1:])
        )


def point_app_at_set(app: App, serving: ServingSet) -> None:
    """The app's replicas become exactly `serving` (rows replaced in the caller's commit)."""
    point_app_at(app, serving.first)
    app.extra_replicas.clear()
    session = object_session(app)
    if session is not None:
        session.flush()  # the old rows go before new ones take their (app, replica) slots
    for index, other in enumerate(serving.others, start=1):
        replica = AppReplica(
            replica=index,
            container_id=other.container_id,
            container_name=other.container_name or other.container_id,
        )
        set_endpoint(replica, other.endpoint)
        app.extra_replicas.append(replica)
