"""Health endpoints, the docs through the router, and a route update nginx refuses."""

from __future__ import annotations

import httpx
import pytest

from minipaas.db.models import AppDomain
from minipaas.db.session import get_session
from minipaas.router.control import RouteConflictError
from minipaas.router.lua_router import Route
from minipaas.services.routing import get_router, publish_app_route
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker]


def test_health_endpoints(api: httpx.Client) -> None:
    assert api.get("/health").json() == {"status": "ok"}
    assert api.get("/health/db").status_code == 200
    assert api.get("/db-health").status_code == 200
    ready = api.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "database": "ok",
        "redis": "ok",
        "docker": "ok",
        "router": "ok",
    }


def test_docs_work_directly_and_through_the_router(
    stack: Stack, api: httpx.Client, router: httpx.Client
) -> None:
    assert "/openapi.json" in api.get("/docs").text
    assert api.get("/openapi.json").json()["info"]["title"] == "mini-paas"
    platform = {"Host": stack.settings.platform_host}
    docs = router.get("/api/docs", headers=platform)
    assert docs.status_code == 200
    assert "'/api/openapi.json'" in docs.text or '"/api/openapi.json"' in docs.text
    spec = router.get("/api/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["servers"] == [{"url": "/api"}]
    assert router.get("/api/health").json() == {"status": "ok"}
    # pages that keep a token live on the platform's origin only, never beside app content
    for page in ("/api/docs", "/api/ui"):
        moved = router.get(page)
        assert moved.status_code == 308
        host = stack.settings.platform_host
        assert moved.headers["location"] == f"http://{host}:{stack.settings.router_port}{page}"
    assert router.get("/api/ui", headers=platform).status_code == 200


def test_a_route_update_nginx_refuses_leaves_the_old_route_serving(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    first = create_app(api, app_name, HELLO_V1)
    second = create_app(api, f"{app_name}-b", HELLO_V2)
    assert deploy(api, first["id"])["status"] == "succeeded"
    assert deploy(api, second["id"])["status"] == "succeeded"
    shared = f"{app_name}.example.test"
    with get_session() as db:
        db.add(AppDomain(app_id=first["id"], hostname=shared))
        db.commit()
    publish_app_route(first["id"])
    nginx = get_router()
    pids_before = (nginx.pid(), nginx.worker_pids())
    live = nginx.live_table()[second["id"]]
    # the second app claims the first one's domain: the router's table refuses it
    stolen = Route(live.app_id, live.app_name, live.kind, live.port, (*live.hosts, shared))
    with pytest.raises(RouteConflictError, match=shared):
        nginx.set_route(stolen)

    assert nginx.live_table()[second["id"]] == live
    assert router.get("/", headers={"Host": shared}).text == "hello from v1\n"
    second_host = f"{second['name']}.{stack.settings.apps_domain}"
    assert router.get("/", headers={"Host": second_host}).text == "hello from v2\n"
    assert (nginx.pid(), nginx.worker_pids()) == pids_before  # no reload, no restart
