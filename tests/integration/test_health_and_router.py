"""Health endpoints, the docs through the router, and a refused nginx config."""

from __future__ import annotations

import httpx
import pytest

from minipaas.router.nginx import RouterError
from minipaas.services.routing import get_router, render_current_site
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


def test_docs_work_directly_and_through_the_router(api: httpx.Client, router: httpx.Client) -> None:
    assert "/openapi.json" in api.get("/docs").text
    assert api.get("/openapi.json").json()["info"]["title"] == "mini-paas"
    docs = router.get("/api/docs")
    assert docs.status_code == 200
    assert "'/api/openapi.json'" in docs.text or '"/api/openapi.json"' in docs.text
    spec = router.get("/api/openapi.json")
    assert spec.status_code == 200
    assert spec.json()["servers"] == [{"url": "/api"}]
    assert router.get("/api/health").json() == {"status": "ok"}


def test_a_config_nginx_refuses_is_never_left_live(stack: Stack, router: httpx.Client) -> None:
    nginx = get_router()
    before = nginx.site_conf.read_text()
    broken = before.replace("server {", "server { this_is_not_a_directive on;", 1)

    with pytest.raises(RouterError, match="this_is_not_a_directive"):
        nginx.apply(lambda: broken)

    assert nginx.site_conf.read_text() == before
    assert nginx.is_running()
    assert router.get("/__router/health").status_code == 200
    # and the next valid change goes through
    nginx.apply(render_current_site)
