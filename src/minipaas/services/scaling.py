"""Scaling without a new release: replicas started or stopped until there are `app.replicas`.

Runs in the worker as the `scale` action, under the app's lock (services/app_actions.py).
New replicas run the current deployment's exact settings and image (what runs, not the app's
settings for the next deploy); each joins the route once healthy. Replicas that go are taken
out of the route first, drained, then stopped. Replica 0 (the app's own container) never
goes: an app has at least one.
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from sqlalchemy.orm import Session

from minipaas.config import get_settings
from minipaas.db.models import App, AppReplica, Deployment
from minipaas.runtime import StartedContainer, get_runtime
from minipaas.services import routing
from minipaas.services.deployments.events import record_event
from minipaas.services.deployments.pipeline import replica_spec
from minipaas.services.deployments.readiness import wait_until_ready
from minipaas.services.endpoints import endpoint_of, set_endpoint
from minipaas.services.errors import Conflict

log = logging.getLogger(__name__)


def scale(db: Session, app: App) -> None:
    """Makes the app's replicas as many as it is set to; raises Conflict naming the
    replicas that would not become healthy (those that did stay)."""
    wanted = set(range(1, app.replicas))
    existing = {replica.replica: replica for replica in app.extra_replicas}
    surplus = [existing[index] for index in sorted(existing) if index not in wanted]
    missing = sorted(wanted - set(existing))
    if surplus:
        _remove_replicas(db, app, surplus)
    if missing:
        _add_replicas(db, app, missing)


def _remove_replicas(db: Session, app: App, surplus: list[AppReplica]) -> None:
    endpoints = [e for e in map(endpoint_of, surplus) if e is not None]
    containers = [r.container_id for r in surplus]
    for replica in surplus:
        app.extra_replicas.remove(replica)
    db.commit()
    routing.publish_app_route(app.id)  # out of rotation before they stop
    routing.drain_all(endpoints, timeout=get_settings().drain_timeout_seconds)
    runtime = get_runtime()

    def retire(container_id: str) -> None:
        runtime.stop(container_id)
        runtime.remove(container_id)

    with ThreadPoolExecutor(max_workers=min(len(containers), 8)) as pool:
        list(pool.map(retire, containers))
    _note(app, f"scaled down to {app.replicas} replica(s)")


def _add_replicas(db: Session, app: App, missing: list[int]) -> None:
    deployment = db.get(Deployment, app.current_deployment_id or 0)
    if deployment is None or deployment.image_id is None:
        raise Conflict("the app has no successful deployment to run more replicas of; deploy it")
    run = deployment.run_settings()
    health = run.health
    specs = {
        index: replace(
            spec := replica_spec(
                app_id=app.id,
                deployment_id=deployment.id,
                run=run,
                image=deployment.image_id,
                replica=index,
            ),
            # Its own name: the deploy's replica of this index may live on (as replica 0,
            # after the first one was removed by hand), and a name taken is a name removed
            name=f"{spec.name}-{secrets.token_hex(3)}",
        )
        for index in missing
    }
    runtime = get_runtime()

    def start(index: int) -> StartedContainer | str:
        try:
            started = runtime.run_container(specs[index])
        except Exception as exc:
            return f"replica {index}: {str(exc).splitlines()[0]}"
        try:
            wait_until_ready(started, health, internal_port=run.internal_port)
        except Exception as exc:
            runtime.remove(started.id)
            return f"replica {index}: {str(exc).splitlines()[0]}"
        return started

    with ThreadPoolExecutor(max_workers=min(len(missing), 8)) as pool:
        outcomes = dict(zip(missing, pool.map(start, missing), strict=True))
    failures = [outcome for outcome in outcomes.values() if isinstance(outcome, str)]
    for index, outcome in outcomes.items():
        if isinstance(outcome, StartedContainer):
            replica = AppReplica(
                replica=index, container_id=outcome.id, container_name=outcome.name
            )
            set_endpoint(replica, outcome.endpoint)
            app.extra_replicas.append(replica)
    db.commit()
    routing.publish_app_route(app.id)
    _note(app, f"scaled up to {1 + len(app.extra_replicas)} replica(s)")
    if failures:
        raise Conflict("not every new replica became healthy: " + "; ".join(failures))


def _note(app: App, message: str) -> None:
    if app.current_deployment_id is not None:
        record_event(app.current_deployment_id, "scaled", message)
    log.info("app %s: %s", app.id, message)
