"""Routes follow the database: one app's route is published when it changes, the whole table
when the reconciler finds drift. nginx is never reloaded for a route (router/lua_router.py)."""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from minipaas import metrics
from minipaas.config import get_settings
from minipaas.db.models import ACTIVE_DEPLOYMENT_STATUSES, App, AppStatus, Deployment
from minipaas.db.session import get_session
from minipaas.router.errors import RouterError
from minipaas.router.lua_router import LuaRouter, Route, RouteKind

log = logging.getLogger(__name__)


# Set by the platform for the processes its supervisor runs (host/platform.py)
SUPERVISED_ENV = "MINIPAAS_SUPERVISED"


@lru_cache
def get_router() -> LuaRouter:
    return LuaRouter(get_settings(), supervised=os.environ.get(SUPERVISED_ENV) == "1")


def app_url(app: App) -> str:
    """Where the app answers on its own origin."""
    settings = get_settings()
    port = "" if settings.router_port == 80 else f":{settings.router_port}"
    return f"http://{app.name}.{settings.apps_domain}{port}/"


def _was_running_before_deploy(db: Session, app_ids: list[int]) -> set[int]:
    """During a deploy the old container keeps serving only if it was running before."""
    return set(
        db.scalars(
            select(Deployment.app_id).where(
                Deployment.app_id.in_(app_ids),
                Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES),
                Deployment.app_status_before == AppStatus.RUNNING,
            )
        )
    )


def _route_of(app: App, was_running: bool) -> Route | None:
    """An app with a container gets a route: a proxy when it serves, a 503 page if not."""
    if app.container_id is None:
        return None
    serving = (
        app.status is AppStatus.RUNNING
        or (app.status is AppStatus.DEPLOYING and was_running)
        # replica 0 crashed (no port while it is down): the other replicas serve
        or (app.status is AppStatus.CRASHED and app.published_port is None)
    )
    ports = replica_ports(app) if serving else []
    kind = RouteKind.PROXY if ports else RouteKind.STOPPED
    return get_router().route(
        app_id=app.id,
        app_name=app.name,
        kind=kind,
        port=ports[0] if ports else None,
        domains=[domain.hostname for domain in app.domains],
        more_ports=ports[1:],
    )


def replica_ports(app: App) -> list[int]:
    """Ports of the replicas in rotation, the first replica's first (a replica that is down
    has no port until the healer has it back; one that failed its probes is left out while
    another serves: if none is healthy, every running one is tried rather than none)."""
    running: list[tuple[int, bool]] = []
    if app.published_port is not None:
        running.append((app.published_port, app.unhealthy_since is None))
    for replica in app.extra_replicas:
        if replica.published_port is not None:
            running.append((replica.published_port, replica.unhealthy_since is None))
    healthy = [port for port, ok in running if ok]
    ports: list[int] = []
    for port in healthy or [port for port, _ in running]:
        if port not in ports:  # a port Docker handed out again after a restart: listed once
            ports.append(port)
    return ports


def route_of_app(db: Session, app_id: int) -> Route | None:
    app = db.get(App, app_id)
    if app is None:
        return None
    return _route_of(app, app_id in _was_running_before_deploy(db, [app_id]))


def current_routes() -> list[Route]:
    with get_session() as db:
        apps = db.scalars(
            select(App)
            .where(App.container_id.is_not(None))
            .options(selectinload(App.domains), selectinload(App.extra_replicas))
        ).all()
        was_running = _was_running_before_deploy(db, [app.id for app in apps])
        routes = [_route_of(app, app.id in was_running) for app in apps]
    return [route for route in routes if route is not None]


def publish_app_route(app_id: int) -> None:
    """Makes the app's committed state live in the router (raises RouterError).

    The state is read under the router's lock, so the last publish shows the newest state.
    """

    def read_route() -> Route | None:
        with get_session() as db:
            return route_of_app(db, app_id)

    try:
        get_router().publish(app_id, read_route)
    except BaseException:
        metrics.ROUTE_UPDATES.labels("failed").inc()
        raise
    metrics.ROUTE_UPDATES.labels("ok").inc()


def publish_app_route_best_effort(app_id: int) -> None:
    """For cleanup paths: the failure is logged, the caller's own error matters more; the
    reconciler repairs the table within one interval."""
    try:
        publish_app_route(app_id)
    except (RouterError, OSError, ValueError) as exc:
        log.error("route of app %s could not be republished: %s", app_id, exc)


def sync_routes() -> str | None:
    """The reconciler's pass: nginx runs, and its table is exactly the database's.

    Returns what it repaired, or None when nothing needed it.
    """
    router = get_router()
    started = router.ensure_running()
    if started:
        metrics.ROUTER_RELOADS.inc()
    if not router.sync(current_routes):
        return "nginx (re)started with its routes" if started else None
    return "routes rewritten from the database (the router's table had drifted)"


def drain_all(ports: list[int], *, timeout: float) -> int:
    """drain() for several ports under one deadline; returns the requests still open."""
    deadline = time.monotonic() + timeout
    return sum(drain(port, timeout=max(deadline - time.monotonic(), 0)) for port in ports)


def drain(port: int, *, timeout: float) -> int:
    """Waits until no request the router proxies to `port` is still in flight; returns how
    many still were when `timeout` ran out (a websocket can outlive any sane wait)."""
    router = get_router()
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        in_flight = router.in_flight(port)
        if in_flight == 0 or time.monotonic() >= deadline:
            return in_flight
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
