"""Publishes the router configuration from the apps' state in the database."""

from __future__ import annotations

import logging
from functools import lru_cache

from sqlalchemy import select

from minipaas.config import get_settings
from minipaas.db.models import ACTIVE_DEPLOYMENT_STATUSES, App, AppStatus, Deployment
from minipaas.db.session import get_session
from minipaas.router.nginx import NginxRouter, RouterError
from minipaas.router.render import AppRoute, RouteKind, render_site

log = logging.getLogger(__name__)


@lru_cache
def get_router() -> NginxRouter:
    return NginxRouter(get_settings())


def current_routes() -> list[AppRoute]:
    """Every app that has a container gets a route: a proxy when it runs, a 503 page if not."""
    routes: list[AppRoute] = []
    with get_session() as session:
        apps = session.scalars(select(App).where(App.container_id.is_not(None))).all()
        # During a deploy the old container keeps serving only if it was running before
        was_running = set(
            session.scalars(
                select(Deployment.app_id).where(
                    Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES),
                    Deployment.app_status_before == AppStatus.RUNNING,
                )
            ).all()
        )
        for app in apps:
            serving = app.status is AppStatus.RUNNING or (
                app.status is AppStatus.DEPLOYING and app.id in was_running
            )
            if serving and app.published_port:
                routes.append(AppRoute(app.id, app.name, RouteKind.PROXY, app.published_port))
            else:
                routes.append(AppRoute(app.id, app.name, RouteKind.STOPPED))
    return routes


def render_current_site() -> str:
    settings = get_settings()
    return render_site(
        current_routes(),
        listen=settings.router_listen,
        api_address=settings.api_url.removeprefix("http://"),
    )


def publish_routes_best_effort() -> None:
    """For cleanup paths: the failure is logged, the caller's own error matters more."""
    try:
        publish_routes()
    except (RouterError, OSError) as exc:
        log.error("routes could not be republished: %s", exc)


def publish_routes(*, drain: bool = False) -> bool:
    """Renders routes from committed state and makes them live (raises RouterError).

    `drain`: wait for requests still in flight on the old nginx workers. Only a deploy needs
    it (its old container must outlive them). A request that waits for its own action must not
    wait for it: that request itself keeps an old worker busy.
    """
    router = get_router()
    router.ensure_layout()
    return router.apply(render_current_site, drain=drain)
