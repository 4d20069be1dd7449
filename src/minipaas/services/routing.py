"""Routes follow the database: one app's route is published when it changes, the whole table
when the reconciler finds drift. nginx is never reloaded for a route (router/lua_router.py)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from minipaas import metrics
from minipaas.config import get_settings
from minipaas.db.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    App,
    AppStatus,
    Deployment,
)
from minipaas.db.session import read_session
from minipaas.router.errors import RouterError
from minipaas.router.lua_router import Backend, LuaRouter, Route, RouteKind
from minipaas.router.route import LOOPBACK, is_ipv4
from minipaas.runtime.base import Endpoint
from minipaas.services.endpoints import ReplicaRow, endpoint_of

log = logging.getLogger(__name__)


# Set by the platform for the processes its supervisor runs (host/platform.py)
SUPERVISED_ENV = "MINIPAAS_SUPERVISED"


@lru_cache
def get_router() -> LuaRouter:
    return LuaRouter(get_settings(), supervised=os.environ.get(SUPERVISED_ENV) == "1")


def app_url(name: str) -> str:
    """Where the app of this name answers on its own origin."""
    settings = get_settings()
    port = "" if settings.router_port == 80 else f":{settings.router_port}"
    return f"http://{name}.{settings.apps_domain}{port}/"


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
    backends = replica_backends(app) if serving else []
    first = backends[0] if backends else None
    return get_router().route(
        app_id=app.id,
        app_name=app.name,
        kind=RouteKind.PROXY if first else RouteKind.STOPPED,
        port=first.port if first else None,
        address=first.address if first else LOOPBACK,
        domains=[domain.hostname for domain in app.domains],
        more_backends=backends[1:],
    )


def serving_endpoints(app: App) -> list[Endpoint]:
    """Where the replicas in rotation answer, the first replica's first (a replica that is
    down has no port until the healer has it back; one that failed its probes is left out
    while another serves: if none is healthy, every running one is tried rather than none)."""
    return serving_endpoints_of([app, *app.extra_replicas])


def serving_endpoints_of(rows: Sequence[ReplicaRow]) -> list[Endpoint]:
    """serving_endpoints() of replica rows, the first replica's first."""
    running: list[tuple[Endpoint, bool]] = []
    for row in rows:
        endpoint = endpoint_of(row)
        if endpoint is not None:
            running.append((endpoint, row.unhealthy_since is None))
    healthy = [endpoint for endpoint, ok in running if ok]
    endpoints: list[Endpoint] = []
    for endpoint in healthy or [endpoint for endpoint, _ in running]:
        if endpoint not in endpoints:  # a port Docker handed out again after a restart
            endpoints.append(endpoint)
    return endpoints


def replica_backends(app: App) -> list[Backend]:
    """serving_endpoints() as the router takes them."""
    backends: list[Backend] = []
    for endpoint in serving_endpoints(app):
        backend = router_backend(endpoint)
        if backend is not None and backend not in backends:
            backends.append(backend)
    return backends


def router_backend(endpoint: Endpoint) -> Backend | None:
    """The endpoint as nginx's balancer takes it: an IPv4 address (it resolves no names, so
    a node reported by name is looked up here); None, logged, when that fails."""
    address = endpoint.address
    if not is_ipv4(address):
        try:
            found = socket.getaddrinfo(address, endpoint.port, socket.AF_INET, socket.SOCK_STREAM)
            address = str(found[0][4][0])
        except (OSError, IndexError) as exc:
            log.warning("replica at %s left out of the route: %s", endpoint, exc)
            return None
    try:
        return Backend(address, endpoint.port)
    except ValueError as exc:
        log.warning("replica at %s left out of the route: %s", endpoint, exc)
        return None


def route_of_app(db: Session, app_id: int) -> Route | None:
    app = db.get(App, app_id)
    if app is None:
        return None
    return _route_of(app, app_id in _was_running_before_deploy(db, [app_id]))


def current_routes() -> list[Route]:
    with read_session() as db:
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
        with read_session() as db:
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


def drain_all(endpoints: list[Endpoint], *, timeout: float) -> int:
    """drain() for several replicas under one deadline; returns the requests still open."""
    deadline = time.monotonic() + timeout
    return sum(drain(e, timeout=max(deadline - time.monotonic(), 0)) for e in endpoints)


def drain(endpoint: Endpoint, *, timeout: float) -> int:
    """Waits until no request the router proxies to the replica at `endpoint` (its node's
    address and port: the same port on another node is another replica) is still in
    flight; returns how many still were when `timeout` ran out (a websocket can outlive any
    sane wait)."""
    backend = router_backend(endpoint)
    if backend is None:
        return 0  # never in the route: nothing of it to wait for
    router = get_router()
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        in_flight = router.in_flight(backend)
        if in_flight == 0 or time.monotonic() >= deadline:
            return in_flight
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
