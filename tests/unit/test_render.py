from __future__ import annotations

from pathlib import Path

import pytest

from minipaas.router.render import (
    AppRoute,
    RouteKind,
    render_main_config,
    render_site,
    version_of,
)


def _site(routes: list[AppRoute]) -> str:
    return render_site(routes, listen="127.0.0.1:8080", api_address="127.0.0.1:8081")


def test_running_app_is_proxied_with_prefix_stripped_and_forwarded_headers() -> None:
    site = _site([AppRoute(7, "web", RouteKind.PROXY, 32768)])
    assert "upstream minipaas_app_7 {\n    server 127.0.0.1:32768;" in site
    assert "location /apps/7/ {\n        proxy_pass http://minipaas_app_7/;" in site
    assert "proxy_set_header X-Forwarded-Prefix /apps/7;" in site
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in site
    assert "proxy_set_header Upgrade $http_upgrade;" in site
    assert "proxy_set_header Connection $connection_upgrade;" in site
    assert "location = /apps/7 {\n        return 308 /apps/7/$is_args$args;" in site


def test_stopped_app_answers_503_page() -> None:
    site = _site([AppRoute(3, "web", RouteKind.STOPPED)])
    assert "upstream minipaas_app_3" not in site
    assert "return 503 '<!doctype html>" in site
    assert "app web is not running" in site


def test_app_without_route_falls_through_to_404() -> None:
    site = _site([])
    assert "/apps/" in site  # only in the 404 message
    assert "location /apps/" not in site
    assert "return 404" in site


def test_api_is_proxied_under_api_prefix() -> None:
    site = _site([])
    assert "upstream minipaas_api {\n    server 127.0.0.1:8081;" in site
    assert "location /api/ {\n        proxy_pass http://minipaas_api/;" in site
    assert "X-Forwarded-Prefix /api;" in site
    assert "listen 127.0.0.1:8080 default_server;" in site


def test_routes_are_rendered_in_a_stable_order_and_version_changes_with_them() -> None:
    one = AppRoute(1, "a", RouteKind.PROXY, 40001)
    two = AppRoute(2, "b", RouteKind.STOPPED)
    assert _site([one, two]) == _site([two, one])
    moved = AppRoute(1, "a", RouteKind.PROXY, 40002)
    assert version_of(_site([one, two])) != version_of(_site([moved, two]))
    assert version_of(_site([one])) == version_of(_site([one]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": RouteKind.PROXY, "port": None}, "port"),
        ({"kind": RouteKind.PROXY, "port": 70000}, "port"),
        ({"kind": RouteKind.STOPPED, "app_name": "x'; return 200 '"}, "DNS"),
    ],
)
def test_route_refuses_values_that_could_inject_config(
    kwargs: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"app_id": 1, "app_name": "ok", **kwargs}
    with pytest.raises(ValueError, match=message):
        AppRoute(**values)  # type: ignore[arg-type]


def test_main_config_points_at_data_dir() -> None:
    text = render_main_config(
        nginx_dir=Path("/d/nginx"),
        log_dir=Path("/d/logs"),
        run_dir=Path("/d/run"),
        run_as_root=True,
    )
    assert "pid /d/run/nginx.pid;" in text
    assert "include /d/nginx/site.conf;" in text
    assert "user nobody nogroup;" in text
    assert "user " not in render_main_config(
        nginx_dir=Path("/d"), log_dir=Path("/d"), run_dir=Path("/d"), run_as_root=False
    )
