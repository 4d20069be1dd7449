"""Ending a deployment whose worker died before it could (killed, crashed, timed out)."""

from __future__ import annotations

from sqlalchemy import select

from minipaas.config import get_settings
from minipaas.db.models import ACTIVE_DEPLOYMENT_STATUSES, App, Deployment
from minipaas.db.session import get_session
from minipaas.runtime import container_name, get_runtime
from minipaas.runtime.base import LOOPBACK, Endpoint
from minipaas.services import routing
from minipaas.services.app_lock import app_lock
from minipaas.services.deployments import outcome
from minipaas.services.deployments.outcome import Serving


def end_abandoned_deployment_locked(deployment_id: int, reason: str) -> None:
    """end_abandoned_deployment, after waiting for the app's lock (the job backstop)."""
    with get_session() as db:
        app_id = db.scalar(select(Deployment.app_id).where(Deployment.id == deployment_id))
    if app_id is None:
        return
    with app_lock(app_id):
        end_abandoned_deployment(deployment_id, reason)


def end_abandoned_deployment(deployment_id: int, reason: str) -> None:
    """Ends it the way its worker would have; the caller holds the app's lock.

    If it died after switching the route and its container is there, the deploy did succeed
    (one that stopped since is the healer's to restart, with its backoff). If the
    switched-to container is gone, the route goes back to the previous deployment's.
    """
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        if deployment is None or deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
            return
        app_id = deployment.app_id
        new_container = deployment.container_id
        switched = new_container is not None and deployment.app.container_id == new_container
    if switched:
        assert new_container is not None
        # Exited is not gone: failing the deploy would remove it, and the previous set may
        # be gone already (its removal follows the switch), leaving the app nothing to run
        if get_runtime().state(new_container) is not None:
            outcome.mark_succeeded(app_id, deployment_id)
            # It may have stopped before telling the router: the route follows the database
            routing.publish_app_route_best_effort(app_id)
            return
        _point_back_at_current_release(app_id)
    settings = get_settings()
    outcome.mark_failed(
        app_id,
        deployment_id,
        reason,
        new_container=new_container or container_name(settings, app_id, deployment_id),
    )


def _point_back_at_current_release(app_id: int) -> None:
    """The container of the app's last successful deployment serves again (if it still can,
    the reconciler confirms it within one interval)."""
    with get_session() as db:
        app = db.get(App, app_id)
        assert app is not None
        current = (
            db.get(Deployment, app.current_deployment_id) if app.current_deployment_id else None
        )
        serving = None
        runtime = get_runtime()
        if (
            current is not None
            and current.container_id is not None
            and runtime.state(current.container_id) is not None
        ):
            port, address = current.published_port, current.published_address
            endpoint = None if port is None else Endpoint(address or LOOPBACK, port)
            serving = Serving(current.container_id, current.container_name, endpoint)
        outcome.point_app_at(app, serving)
        db.commit()
