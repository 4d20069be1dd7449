"""Stop, start, restart and remove an app's container, and delete apps."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy.orm import Session

from minipaas import queue
from minipaas.config import get_settings
from minipaas.db.models import App, AppStatus
from minipaas.db.session import get_session
from minipaas.router.nginx import RouterError
from minipaas.runtime import RuntimeFailure, StartedContainer, get_runtime
from minipaas.services import routing
from minipaas.services.app_lock import app_lock
from minipaas.services.apps import get_app
from minipaas.services.deployments import (
    DeploymentFailed,
    HealthCheck,
    active_deployment,
    exit_message,
    wait_until_ready,
)
from minipaas.services.errors import Conflict, ServiceError, Unavailable
from minipaas.services.state import Action, check_action, status_after

log = logging.getLogger(__name__)

ACTION_JOB = "minipaas.worker.jobs.app_action"
DELETE_JOB = "minipaas.worker.jobs.delete_app"


# --- API side ------------------------------------------------------------------------------


def request_action(*, db: Session, app_id: int, action: Action) -> bool:
    """Queues a lifecycle action; returns True if it completed within the wait time."""
    app = get_app(db=db, app_id=app_id)
    active = active_deployment(db=db, app_id=app_id)
    if active is not None:
        raise Conflict(
            f"cannot {action} while deployment {active.id} is {active.status}; wait for it to end"
        )
    check_action(action, app.status, app.container_id is not None)
    db.commit()  # no transaction (nor pooled connection) is held while we wait
    return _queue_and_wait(app_id, str(action), ACTION_JOB, app_id, action.value)


def request_delete(*, db: Session, app_id: int) -> bool:
    """Queues the removal of an app and all it owns; True if done within the wait time."""
    get_app(db=db, app_id=app_id)
    active = active_deployment(db=db, app_id=app_id)
    if active is not None:
        raise Conflict(
            f"cannot delete app {app_id} while deployment {active.id} is {active.status}; "
            "wait for it to end"
        )
    db.commit()
    return _queue_and_wait(app_id, "delete", DELETE_JOB, app_id)


def _queue_and_wait(app_id: int, label: str, function_path: str, *args: Any) -> bool:
    """One waiting action per app: a flood of requests cannot fill the worker's queue."""
    settings = get_settings()
    # A start or restart waits for health: the job may take a stop, a start and that wait
    timeout = max(
        settings.action_timeout_seconds,
        int(settings.ready_timeout_seconds) + 2 * settings.stop_grace_seconds + 15,
    )
    try:
        with queue.pending_action(app_id, label, timeout) as claimed:
            if not claimed:
                raise Conflict(f"another action is still pending for app {app_id}; wait for it")
            job = queue.enqueue(
                function_path,
                *args,
                job_id=f"{label}-{app_id}-{uuid.uuid4().hex[:12]}",
                timeout=timeout,
            )
            return _await(job)
    except queue.QueueUnavailable as exc:
        raise Unavailable(f"{exc}; nothing was changed, try again later") from None


def _await(job: Any) -> bool:
    outcome = queue.wait_for_job(job, get_settings().action_wait_seconds)
    if outcome is None:
        return False
    if isinstance(outcome, dict) and outcome.get("error"):
        raise Conflict(str(outcome["error"]))
    return True


# --- worker side ---------------------------------------------------------------------------


def perform_action(app_id: int, action: Action) -> dict[str, Any]:
    """Runs one lifecycle action under the app's lock; returns an outcome, never raises it."""
    with app_lock(app_id):
        try:
            _perform(app_id, action)
        except (ServiceError, DeploymentFailed, RuntimeFailure, RouterError) as exc:
            return {"ok": False, "error": str(exc)}
    return {"ok": True, "error": None}


def _perform(app_id: int, action: Action) -> None:
    with get_session() as db:
        app = get_app(db=db, app_id=app_id)
        if active_deployment(db=db, app_id=app_id) is not None:
            raise Conflict(f"cannot {action} while a deployment is in progress")
        check_action(action, app.status, app.container_id is not None)
        if action in (Action.STOP, Action.REMOVE):
            _take_down(db, app, action)
        else:
            _bring_up(db, app, action)


def _take_down(db: Session, app: App, action: Action) -> None:
    """The router shows the 503 page (or no route) before the container goes away."""
    runtime = get_runtime()
    container_id = app.container_id
    assert container_id is not None
    before = (app.status, app.container_id, app.container_name, app.published_port)
    app.status = status_after(action)
    if action is Action.REMOVE:
        app.container_id = app.container_name = None
        app.published_port = None
    db.commit()
    try:
        routing.publish_routes()
        if action is Action.STOP:
            runtime.stop(container_id)
        else:
            runtime.remove(container_id)
    except (RuntimeFailure, RouterError):
        # Nothing happened as far as anyone can tell: put the app back as it was
        app.status, app.container_id, app.container_name, app.published_port = before
        db.commit()
        routing.publish_routes_best_effort()
        raise


def _bring_up(db: Session, app: App, action: Action) -> None:
    runtime = get_runtime()
    container_id = app.container_id
    assert container_id is not None
    if runtime.state(container_id) is None:
        _forget_container(app)
        db.commit()
        routing.publish_routes()
        raise Conflict("the app's container no longer exists; deploy the app again")
    if action is Action.RESTART:
        runtime.stop(container_id)
    try:
        port = runtime.start(container_id)
        wait_until_ready(
            StartedContainer(container_id, app.container_name or container_id, port),
            health=HealthCheck(app.health_check_path, app.health_check_running_seconds),
        )
    except (RuntimeFailure, DeploymentFailed) as exc:
        state = runtime.state(container_id)
        runtime.stop(container_id)
        app.status = AppStatus.FAILED
        app.status_detail = f"{action} failed: {str(exc).splitlines()[0]}"
        db.commit()
        routing.publish_routes()
        if state is not None and not state.running:
            message = exit_message(container_id, state)
        else:
            message = str(exc)
        raise Conflict(f"could not {action} the app: {message}") from None
    app.published_port = port
    app.status = status_after(action)
    app.status_detail = None
    db.commit()
    routing.publish_routes()


def _forget_container(app: App) -> None:
    app.container_id = app.container_name = None
    app.published_port = None
    app.status = AppStatus.FAILED


def perform_delete(app_id: int) -> dict[str, Any]:
    """Removes every container of the app, the app row (and its history), then its route."""
    runtime = get_runtime()
    with app_lock(app_id):
        with get_session() as db:
            if active_deployment(db=db, app_id=app_id) is not None:
                return {"ok": False, "error": "a deployment started meanwhile; try again"}
        for container_id in runtime.platform_container_ids(app_id):
            runtime.remove(container_id)
        with get_session() as db:
            app = db.get(App, app_id)
            if app is not None:
                db.delete(app)
                db.commit()
        try:
            routing.publish_routes()
        except RouterError as exc:
            return {"ok": False, "error": f"app deleted but the router was not updated: {exc}"}
    return {"ok": True, "error": None}
