"""Stop, start, restart and remove an app's container, and delete apps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from rq.job import Job
from sqlalchemy import select
from sqlalchemy.orm import Session

from minipaas import queue
from minipaas.clock import now
from minipaas.config import get_settings
from minipaas.db.models import App, AppReplica, AppStatus
from minipaas.db.session import get_session
from minipaas.router.errors import RouterError
from minipaas.runtime import (
    Endpoint,
    EngineUnavailable,
    RuntimeFailure,
    StartedContainer,
    get_runtime,
)
from minipaas.services import routing, scaling
from minipaas.services.app_lock import app_lock
from minipaas.services.apps import ask_for_delete, get_app, withdraw_delete
from minipaas.services.deployments import records
from minipaas.services.deployments.outcome import (
    DeploymentFailed,
    ServingSet,
    point_app_at,
    point_app_at_set,
)
from minipaas.services.deployments.readiness import exit_message, wait_until_ready
from minipaas.services.endpoints import set_endpoint
from minipaas.services.errors import Conflict, Unavailable
from minipaas.services.job_results import (
    DONE,
    FailureKind,
    JobResult,
    failure_of,
    of_ended_job,
)
from minipaas.services.polling import poll_until
from minipaas.services.state import Action, check_action, status_after
from minipaas.worker import jobs, liveness

log = logging.getLogger(__name__)


# --- API side ------------------------------------------------------------------------------
# Stop, start, restart and remove are recorded as actions (app_actions.py). A delete is
# recorded on the app's row (delete_requested_at), which goes with the app: its job is
# followed in the queue, and queued again if it is lost (requeue_lost_deletes).


def action_timeout() -> int:
    """How long a lifecycle job may run: a start or restart waits for health, and may take
    a stop and a start first."""
    settings = get_settings()
    return max(
        settings.action_timeout_seconds,
        int(settings.ready_timeout_seconds) + 2 * settings.stop_grace_seconds + 15,
    )


def queue_delete(*, db: Session, app_id: int) -> Job:
    """Queues the removal of an app and all it owns; 409 while a delete is still pending."""
    get_app(db=db, app_id=app_id)
    active = records.active_deployment(db=db, app_id=app_id)
    if active is not None:
        raise Conflict(
            f"cannot delete app {app_id} while deployment {active.id} is {active.status}; "
            "wait for it to end"
        )
    db.commit()  # no transaction (nor pooled connection) is held meanwhile
    try:
        # A job on a worker that died is not pending: the delete may be asked for again
        if liveness.job_in_progress(jobs.delete_job_id(app_id)):
            raise Conflict(f"app {app_id} is already being deleted; wait for it")
    except queue.QueueUnavailable as exc:
        raise Unavailable(f"{exc}; nothing was changed, try again later") from None
    asked = now()
    recorded = ask_for_delete(db, app_id, asked)
    try:
        return jobs.enqueue_delete(app_id, timeout=action_timeout())
    except queue.QueueUnavailable as exc:
        if recorded:  # an earlier request, waiting to be queued again, stays
            withdraw_delete(db, app_id, asked)
            db.commit()
        raise Unavailable(f"{exc}; nothing was changed, try again later") from None


def requeue_lost_deletes() -> list[str]:
    """A reconciler step: a delete asked for whose job Redis lost (a restart without its
    data), or whose worker died or was timed out, is queued again (the job is idempotent).
    One that ended with a failure withdrew its request: its result said so."""
    cutoff = now() - liveness.LIFECYCLE_JOB_GRACE
    with get_session() as db:
        app_ids = db.scalars(select(App.id).where(App.delete_requested_at < cutoff)).all()
    actions = []
    for app_id in app_ids:
        try:
            action = _requeue_if_lost(app_id)
        except Exception:  # one app's trouble (Redis, the database) does not stop the others
            log.warning("the delete of app %s was not checked", app_id, exc_info=True)
            continue
        if action:
            actions.append(action)
    return actions


def _requeue_if_lost(app_id: int) -> str | None:
    job_id = jobs.delete_job_id(app_id)
    if liveness.job_in_progress(job_id):
        return None
    status = queue.job_status(job_id)
    if status == "finished":  # it ran to its end, yet its request is still there
        _withdraw_delete_now(app_id)
        return f"app {app_id}: the delete had ended; its request is withdrawn"
    queue.delete_job(job_id)
    jobs.enqueue_delete(app_id, timeout=action_timeout())
    return f"queued the delete of app {app_id} again: its job was {status or 'lost'}"


async def wait_for_delete(job: Job, seconds: float) -> bool:
    """True if the delete ended within `seconds` (raising its failure); the event loop waits."""
    ended = await poll_until(lambda: queue.wait_for_job(job, 0), seconds)
    if ended is None:
        return False
    value = ended.value
    result = value if isinstance(value, JobResult) else of_ended_job(ended.status)
    result.raise_if_failed()
    return True


# --- worker side ---------------------------------------------------------------------------


def carry_out(app_id: int, action: Action) -> None:
    """Runs one lifecycle action; the caller holds the app's lock. Raises what went wrong."""
    with get_session() as db:
        app = get_app(db=db, app_id=app_id)
        if records.active_deployment(db=db, app_id=app_id) is not None:
            raise Conflict(f"cannot {action} while a deployment is in progress")
        check_action(action, app.status, app.container_id is not None)
        if action is Action.SCALE:
            scaling.scale(db, app)
        elif action in (Action.STOP, Action.REMOVE):
            _take_down(db, app, action)
        else:
            _bring_up(db, app, action)
            if app.status is AppStatus.RUNNING:
                scaling.scale(db, app)  # replicas set while it was stopped


def _take_down(db: Session, app: App, action: Action) -> None:
    """The router shows the 503 page (or no route) before the container goes away."""
    runtime = get_runtime()
    before_status, before = app.status, ServingSet.of_app(app)
    assert before.first is not None
    app.status = status_after(action)
    app.forget_crashes()  # the owner's stop is never undone: nothing is due any more
    if action is Action.REMOVE:
        point_app_at_set(app, ServingSet(None))
    db.commit()
    try:
        routing.publish_app_route(app.id)
        # Side by side: replicas that ignore SIGTERM cost one grace period, not one each
        take_down = runtime.stop if action is Action.STOP else runtime.remove
        _each(take_down, [serving.container_id for serving in before.all])
    except Exception:
        # Nothing happened as far as anyone can tell: put the app back as it was
        app.status = before_status
        point_app_at_set(app, before)
        db.commit()
        routing.publish_app_route_best_effort(app.id)
        raise


def _each(step: Callable[[str], object], container_ids: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, min(len(container_ids), 8))) as pool:
        list(pool.map(step, container_ids))


def _bring_up(db: Session, app: App, action: Action) -> None:
    runtime = get_runtime()
    container_id = app.container_id
    assert container_id is not None
    if runtime.state(container_id) is None:
        point_app_at(app, None)
        app.status = AppStatus.FAILED
        db.commit()
        routing.publish_app_route(app.id)
        raise Conflict("the app's container no longer exists; deploy the app again")
    if action is Action.RESTART:
        runtime.stop(container_id)
    try:
        endpoint = runtime.start(container_id)
        wait_until_ready(
            StartedContainer(
                container_id, app.container_name or container_id, endpoint.port, endpoint.address
            ),
            app.run_settings().health,
            internal_port=app.internal_port,
        )
    except EngineUnavailable:
        raise  # nothing is known about the app: 503, try again
    except (RuntimeFailure, DeploymentFailed) as exc:
        _mark_start_failed(db, app, action, exc)
    set_endpoint(app, endpoint)
    app.unhealthy_since = None  # health-gated just now
    _bring_up_others(app, action)
    app.status = status_after(action)
    app.status_detail = None
    app.forget_crashes()
    db.commit()
    routing.publish_app_route(app.id)


def _bring_up_others(app: App, action: Action) -> None:
    """The replicas past the first come up too; one that does not is left out of the route
    (no port) for the healer to restart, the app serves with the others."""
    runtime = get_runtime()
    health = app.run_settings().health

    def up(container: StartedContainer) -> Endpoint | None:
        try:
            if action is Action.RESTART:
                runtime.stop(container.id)
            endpoint = runtime.start(container.id)
            started = StartedContainer(
                container.id, container.name, endpoint.port, endpoint.address
            )
            wait_until_ready(started, health)
        except (RuntimeFailure, DeploymentFailed) as exc:
            log.warning("replica %s of app %s did not come up: %s", container.name, app_id, exc)
            return None
        return endpoint

    app_id = app.id
    replicas: list[AppReplica] = list(app.extra_replicas)
    if not replicas:
        return
    # Plain values for the threads: the session is not theirs to load attributes through
    containers = [StartedContainer(r.container_id, r.container_name, 0) for r in replicas]
    with ThreadPoolExecutor(max_workers=min(len(replicas), 8)) as pool:
        endpoints = list(pool.map(up, containers))
    for replica, endpoint in zip(replicas, endpoints, strict=True):
        set_endpoint(replica, endpoint)
        replica.unhealthy_since = None
        replica.crash_streak = 0
        replica.next_restart_at = None


def _mark_start_failed(db: Session, app: App, action: Action, exc: Exception) -> None:
    """The app would not come up: it is stopped and failed, and the message says why."""
    runtime = get_runtime()
    container_id = app.container_id
    assert container_id is not None
    state = runtime.exit_state(container_id)
    runtime.stop(container_id)
    app.status = AppStatus.FAILED
    app.status_detail = f"{action} failed: {str(exc).splitlines()[0]}"
    db.commit()
    routing.publish_app_route(app.id)
    if state is not None and not state.running:
        message = exit_message(container_id, state, while_starting=True)
    else:
        message = str(exc)
    raise Conflict(f"could not {action} the app: {message}") from None


def perform_delete(app_id: int) -> JobResult:
    """Stops routing to the app, removes every container of it, the app row (and its
    history), then its route."""
    runtime = get_runtime()
    with app_lock(app_id):
        try:
            with get_session() as db:
                if records.active_deployment(db=db, app_id=app_id) is not None:
                    raise Conflict("a deployment started meanwhile; try again")
            _stop_routing_to(app_id)
            for container_id in runtime.platform_container_ids(app_id):
                runtime.remove(container_id)
            runtime.remove_app_network(app_id)
            with get_session() as db:
                app = db.get(App, app_id)
                if app is not None:
                    db.delete(app)
                    db.commit()
        except Exception as exc:
            _withdraw_failed_delete(app_id)
            return failure_of(exc)
        try:
            routing.publish_app_route(app_id)
        except (RouterError, OSError) as exc:
            return JobResult(
                FailureKind.UNAVAILABLE,
                f"the app was deleted but the router was not updated ({exc}); "
                "the reconciler retries",
            )
    return DONE


def _withdraw_failed_delete(app_id: int) -> None:
    """A delete that failed is not tried again by itself: its failure is the answer (a
    retry could delete an app its owner has gone on using). If the database cannot say so
    now, the reconciler tries the delete again, as for a lost one."""
    try:
        _withdraw_delete_now(app_id)
    except Exception:
        log.warning("the failed delete of app %s is still recorded", app_id, exc_info=True)


def _withdraw_delete_now(app_id: int) -> None:
    with get_session() as db:
        withdraw_delete(db, app_id)
        db.commit()


def _stop_routing_to(app_id: int) -> None:
    """The app stopped in the database and its route the 503 page, before its containers
    go: no request is sent to a container being removed (a 502), and the reconciler, which
    repairs the router from the database, keeps it so. If the delete fails from here, the
    app stays stopped and can be deleted again."""
    with get_session() as db:
        app = db.get(App, app_id, with_for_update=True)
        if app is None:
            return
        app.status = AppStatus.STOPPED
        app.status_detail = "stopped to be deleted"
        app.forget_crashes()
        db.commit()
    routing.publish_app_route_best_effort(app_id)
