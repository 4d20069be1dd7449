"""The reload-free router's pure parts: route validation, config rendering, snapshot files."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from minipaas.config import Settings
from minipaas.router.control import load_or_create_secret
from minipaas.router.dynamic_render import RouterConfig, render_router_config
from minipaas.router.route import Route, RouteKind, app_route, check_host_policy
from minipaas.router.route_snapshot import COMPACT_MIN_BYTES, RouteSnapshot

# --- routes --------------------------------------------------------------------------------


def test_route_normalizes_hosts_and_drops_a_stopped_apps_port() -> None:
    route = Route(1, "web", RouteKind.STOPPED, 3000, ("WWW.Example.com.", "b.test", "b.test"))
    assert route.port is None
    assert route.hosts == ("b.test", "www.example.com")
    assert Route(1, "web", "proxy", 80).kind is RouteKind.PROXY  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"app_id": 0}, "app_id"),
        ({"app_id": True}, "app_id"),
        ({"app_id": 2**31}, "app_id"),
        ({"app_name": "Web"}, "DNS"),
        ({"app_name": "x'; return 200 '"}, "DNS"),
        ({"app_name": "-web"}, "DNS"),
        ({"port": None}, "port"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "80"}, "port"),
        ({"kind": "redirect"}, "redirect"),
        ({"hosts": ("a b.test",)}, "not a host name"),
        ({"hosts": ("a;b.test",)}, "not a host name"),
        ({"hosts": ('a"}.test',)}, "not a host name"),
        ({"hosts": ("*.example.com",)}, "not a host name"),
        ({"hosts": ("under_score.test",)}, "not a host name"),
        ({"hosts": ("-a.test",)}, "not a host name"),
        ({"hosts": ("a" * 64 + ".test",)}, "not a host name"),
        ({"hosts": (".".join(["abcdefgh"] * 29),)}, "not a host name"),
        ({"hosts": ("127.0.0.1",)}, "IP address"),
        ({"hosts": ("localhost",)}, "localhost"),
        ({"hosts": "web.test"}, "sequence"),
        ({"hosts": tuple(f"h{i}.test" for i in range(65))}, "at most 64"),
    ],
)
def test_route_refuses_values_that_must_not_reach_nginx(
    values: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {
        "app_id": 1,
        "app_name": "web",
        "kind": RouteKind.PROXY,
        "port": 8080,
        **values,
    }
    with pytest.raises(ValueError, match=message):
        Route(**fields)


def test_route_json_round_trip_and_its_errors() -> None:
    proxy = Route(7, "web", RouteKind.PROXY, 32768, ("web.apps.localhost",))
    stopped = Route(8, "idle", RouteKind.STOPPED)
    assert proxy.to_json() == {
        "id": 7,
        "kind": "proxy",
        "name": "web",
        "port": 32768,
        "hosts": ["web.apps.localhost"],
    }
    assert stopped.to_json() == {"id": 8, "kind": "stopped", "name": "idle"}
    for route in (proxy, stopped):
        assert Route.from_json(json.loads(json.dumps(route.to_json()))) == route
    with pytest.raises(ValueError, match="'kind'"):
        Route.from_json({"id": 1, "name": "web"})
    with pytest.raises(ValueError, match="list"):
        Route.from_json({"id": 1, "name": "web", "kind": "stopped", "hosts": "a.test"})
    with pytest.raises(ValueError, match="object"):
        Route.from_json([1, 2])  # type: ignore[arg-type]


def test_app_route_adds_the_name_under_the_apps_domain() -> None:
    route = app_route(
        app_id=3,
        app_name="shop",
        kind=RouteKind.PROXY,
        port=4000,
        apps_domain="apps.example.com",
        domains=["Shop.Example.org"],
    )
    assert route.hosts == ("shop.apps.example.com", "shop.example.org")


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("minipaas.example.com", "platform"),
        ("evil.minipaas.example.com", "platform"),
        ("apps.example.com", "apps domain itself"),
        ("victim.apps.example.com", "under the apps domain"),
    ],
)
def test_host_policy_keeps_apps_off_the_platform_and_each_others_names(
    host: str, message: str
) -> None:
    route = Route(1, "web", RouteKind.PROXY, 80, ("web.apps.example.com", host))
    with pytest.raises(ValueError, match=message):
        check_host_policy(
            route, platform_host="minipaas.example.com", apps_domain="apps.example.com"
        )


def test_host_policy_allows_own_name_and_other_domains() -> None:
    route = Route(1, "web", RouteKind.PROXY, 80, ("web.apps.example.com", "www.shop.test"))
    check_host_policy(route, platform_host="minipaas.example.com", apps_domain="apps.example.com")


# --- nginx.conf ----------------------------------------------------------------------------


def _config(**changes: Any) -> RouterConfig:
    base = RouterConfig(
        nginx_dir=Path("/d/nginx"),
        log_dir=Path("/d/logs"),
        run_dir=Path("/d/run"),
        control_socket=Path("/d/run/router/control.sock"),
        secret_file=Path("/d/router-control.secret"),
        snapshot_file=Path("/d/nginx/routes/routes.snapshot"),
        journal_file=Path("/d/nginx/routes/routes.journal"),
        listen="127.0.0.1:8080",
        api_address="127.0.0.1:8081",
        platform_host="minipaas.localhost",
        run_as_root=True,
        lua_dir=Path("/src/minipaas/router/lua"),
    )
    return replace(base, **changes)


def _locations(text: str) -> list[str]:
    return re.findall(r"location [^{]+\{.*?\n        \}", text, re.DOTALL)


def test_config_loads_lua_itself_and_keeps_files_under_data_dir() -> None:
    text = render_router_config(_config()).text
    assert "load_module /usr/lib/nginx/modules/ndk_http_module.so;" in text
    assert "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;" in text
    assert "/etc/nginx" not in text
    assert "user nobody nogroup;" in text
    assert "pid /d/run/nginx.pid;" in text
    assert "error_log /d/logs/nginx-error.log warn;" in text
    assert "access_log /d/logs/nginx-access.log minipaas buffer=64k flush=1s;" in text
    assert "$args" not in text and "$request " not in text and '$request"' not in text
    assert "proxy_request_buffering off;" in text.split("location /api/ {", 1)[1].split("}")[0]
    assert "proxy_temp_path /d/nginx/tmp/proxy;" in text
    assert 'lua_package_path "/src/minipaas/router/lua/?.lua;;";' in text
    assert "lua_shared_dict minipaas_routes 64m;" in text
    assert 'snapshot_file = "/d/nginx/routes/routes.snapshot"' in text
    assert 'journal_file = "/d/nginx/routes/routes.journal"' in text
    assert 'secret_file = "/d/router-control.secret"' in text
    unprivileged = render_router_config(_config(run_as_root=False)).text.splitlines()
    assert not [line for line in unprivileged if line.strip().startswith("user ")]


def test_one_upstream_picked_by_lua_with_keepalive_after_the_balancer() -> None:
    text = render_router_config(_config()).text
    upstream = text[text.index("upstream minipaas_app {") :]
    upstream = upstream[: upstream.index("\n    }\n")]
    assert upstream.index("balancer_by_lua_block") < upstream.index("keepalive 64;")
    assert "upstream minipaas_api {\n        server 127.0.0.1:8081;" in text


def test_control_listens_on_the_unix_socket_only() -> None:
    text = render_router_config(_config()).text
    listens = re.findall(r"^\s*listen (.+);$", text, re.MULTILINE)
    assert listens == [
        "127.0.0.1:8080 default_server",
        "127.0.0.1:8080",
        "127.0.0.1:8080",
        "unix:/d/run/router/control.sock",
    ]
    control = text[text.index("listen unix:") :]
    assert 'require("minipaas_router").control()' in control
    public = text[: text.index("listen unix:")]
    assert ".control()" not in public


def test_platform_origin_and_app_content_never_share_a_server() -> None:
    text = render_router_config(_config()).text
    default = text[
        text.index("listen 127.0.0.1:8080 default_server;") : text.index(
            "server_name minipaas.localhost;"
        )
    ]
    # the router's own address: the JSON API and the path routes, but no page keeping a token
    assert 'server_name localhost "" "~^[0-9.]+$"' in default
    assert "location /api/ {\n            proxy_pass http://minipaas_api/;" in default
    assert "proxy_set_header X-Forwarded-Prefix /api;" in default
    assert "location = /__router/health" in default
    assert "route_by_path()" in default
    assert (
        'location ~ "^/api/(ui|docs|redoc)$" {\n'
        "            return 308 http://minipaas.localhost:$server_port$request_uri;"
    ) in default
    platform = text[text.index("server_name minipaas.localhost;") : text.index('server_name "~."')]
    # the platform's origin: the API with its dashboard and docs, never an app
    assert "location /api/ {\n            proxy_pass http://minipaas_api/;" in platform
    assert "minipaas_app" not in platform and "route_by" not in platform
    apps = text[text.index('server_name "~.";') : text.index("listen unix:")]
    assert "route_by_host()" in apps
    assert "location /api/" not in apps and "location = /__router" not in apps


@pytest.mark.parametrize("path_routes", [True, False])
def test_every_app_location_strips_tokens_and_hides_headers(path_routes: bool) -> None:
    text = render_router_config(_config(path_routes=path_routes)).text
    app_locations = [loc for loc in _locations(text) if "proxy_pass http://minipaas_app;" in loc]
    assert len(app_locations) == (2 if path_routes else 1)
    for location in app_locations:
        assert "proxy_set_header Authorization $app_authorization;" in location
        assert "proxy_hide_header Service-Worker-Allowed;" in location
        assert "proxy_ignore_headers X-Accel-Redirect;" in location
        assert "proxy_set_header Upgrade $http_upgrade;" in location
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in location
        assert "proxy_set_header X-Forwarded-Port $server_port;" in location
    assert '"~*^bearer\\s+mp_" "";' in text
    assert "client_max_body_size 50m;" in text
    assert "proxy_read_timeout 300s;" in text


def test_path_routes_can_be_left_out() -> None:
    with_paths = render_router_config(_config()).text
    assert "route_by_path()" in with_paths and "redirect_by_path()" in with_paths
    assert "proxy_set_header X-Forwarded-Prefix /apps/$minipaas_app_id;" in with_paths
    without = render_router_config(_config(path_routes=False)).text
    assert "by_path" not in without
    assert "minipaas_app_id" not in without
    assert "apps live at their own host names" in without


def test_version_is_stable_and_follows_the_config() -> None:
    one = render_router_config(_config())
    assert one == render_router_config(_config())
    assert f'version = "{one.version}"' in one.text
    assert render_router_config(_config(table_mb=128)).version != one.version
    assert render_router_config(_config(path_routes=False)).version != one.version


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nginx_dir": Path("/d/ngi nx")}, "nginx_dir"),
        ({"log_dir": Path('/d/"logs')}, "log_dir"),
        ({"snapshot_file": Path("/d/a;b")}, "snapshot_file"),
        ({"secret_file": Path("relative/secret")}, "secret_file"),
        ({"lua_dir": Path("/d/../etc")}, "lua_dir"),
        ({"control_socket": Path("/" + "d" * 120)}, "unix socket"),
        ({"listen": "127.0.0.1:80; include /etc/passwd"}, "listen"),
        ({"api_address": "127.0.0.1"}, "api_address"),
        ({"platform_host": "Minipaas.localhost"}, "platform_host"),
        ({"platform_host": "a b"}, "platform_host"),
        ({"table_mb": 0}, "table_mb"),
    ],
)
def test_config_refuses_values_that_could_inject_directives(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**changes)


# --- snapshot files ------------------------------------------------------------------------


def test_snapshot_replays_journal_over_snapshot(tmp_path: Path) -> None:
    store = RouteSnapshot(tmp_path)
    one = Route(1, "one", RouteKind.PROXY, 4001, ("one.test",))
    two = Route(2, "two", RouteKind.STOPPED)
    store.write_all([one, two])
    moved = Route(1, "one", RouteKind.PROXY, 4002)
    store.record_set(moved)
    store.record_remove(2)
    store.record_set(Route(3, "three", RouteKind.PROXY, 4003))
    assert store.load() == {1: moved, 3: Route(3, "three", RouteKind.PROXY, 4003)}

    store.compact()
    assert store.journal_file.read_text() == ""
    assert store.load() == {1: moved, 3: Route(3, "three", RouteKind.PROXY, 4003)}
    store.write_all([])
    assert store.load() == {}


def test_replaying_a_journal_twice_changes_nothing(tmp_path: Path) -> None:
    """A crash between a new snapshot and emptying the journal replays the journal again."""
    store = RouteSnapshot(tmp_path)
    store.record_set(Route(1, "one", RouteKind.PROXY, 4001))
    store.record_remove(1)
    store.record_set(Route(2, "two", RouteKind.PROXY, 4002))
    journal = store.journal_file.read_text()
    expected = store.load()
    store.compact()
    store.journal_file.write_text(journal)
    assert store.load() == expected


def test_an_unreadable_line_is_skipped_and_the_rest_counts(tmp_path: Path) -> None:
    store = RouteSnapshot(tmp_path)
    store.record_set(Route(1, "one", RouteKind.PROXY, 4001))
    with open(store.journal_file, "a") as handle:
        handle.write('{"op":"set","route":{"id":2,"kind":"proxy","name":"x","port":0}}\n')
        handle.write('{"op":"set","route":{"id":3,"ki')  # cut short by a power loss
    assert set(store.load()) == {1}
    store.compact()
    assert set(store.load()) == {1}


def test_journal_is_compacted_once_it_outgrows_the_snapshot(tmp_path: Path) -> None:
    store = RouteSnapshot(tmp_path)
    store.write_all([Route(i, f"a{i}", RouteKind.PROXY, 4000) for i in range(1, 100)])
    assert not store.needs_compaction()
    route = Route(1, "a1", RouteKind.PROXY, 4001)
    per_line = len(json.dumps({"op": "set", "route": route.to_json()}, separators=(",", ":"))) + 1
    for _ in range(COMPACT_MIN_BYTES // per_line + 2):
        store.record_set(route)
    assert store.needs_compaction()
    store.compact()
    assert not store.needs_compaction()
    assert store.load()[1] == route


# --- settings and secret -------------------------------------------------------------------


def test_secret_is_made_once_private_or_taken_from_the_environment(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    secret = load_or_create_secret(settings)
    assert len(secret) >= 32
    assert load_or_create_secret(settings) == secret
    assert settings.router_control_secret_file.stat().st_mode & 0o777 == 0o600

    given = "s" * 40
    configured = Settings(data_dir=tmp_path, router_control_secret=given, _env_file=None)
    assert load_or_create_secret(configured) == given
    assert configured.router_control_secret_file.read_text().strip() == given


def test_router_settings_are_validated() -> None:
    settings = Settings(apps_domain="Apps.Example.COM.", _env_file=None)
    assert settings.apps_domain == "apps.example.com"
    assert settings.router_control_socket == settings.run_dir / "router" / "control.sock"
    bad_values: list[dict[str, Any]] = [{"apps_domain": "apps example"}, {"platform_host": "-x"}]
    for bad in bad_values:
        with pytest.raises(ValueError, match="host name"):
            Settings(**bad, _env_file=None)
    with pytest.raises(ValueError, match="ROUTER_CONTROL_SECRET"):
        Settings(router_control_secret="short", _env_file=None)
    with pytest.raises(ValueError, match="ROUTER_CONTROL_SECRET"):
        Settings(router_control_secret="x" * 31 + '"', _env_file=None)
    assert Settings(router_control_secret="", _env_file=None).router_control_secret is None
