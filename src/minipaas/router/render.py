"""Pure rendering of the nginx configuration; no I/O here."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from pathlib import Path


class RouteKind(enum.StrEnum):
    PROXY = "proxy"  # the app has a running container
    STOPPED = "stopped"  # the app has a container that is not running


@dataclass(frozen=True)
class AppRoute:
    app_id: int
    app_name: str
    kind: RouteKind
    port: int | None = None

    def __post_init__(self) -> None:
        # Only integers and DNS labels ever reach the config text
        if self.kind is RouteKind.PROXY and not (self.port and 1 <= self.port <= 65535):
            raise ValueError("a proxy route needs a port between 1 and 65535")
        if not all(c.isalnum() or c == "-" for c in self.app_name):
            raise ValueError("app names in routes are DNS labels")


PROXY_HEADERS = """\
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Forwarded-Port $server_port;
"""


def render_main_config(*, nginx_dir: Path, log_dir: Path, run_dir: Path, run_as_root: bool) -> str:
    """The static nginx.conf that includes the rendered site file."""
    user = "user nobody nogroup;\n" if run_as_root else ""
    tmp = nginx_dir / "tmp"
    return f"""\
# Written by mini-paas; the routes live in site.conf, rendered from the database.
{user}worker_processes auto;
# Old workers finish in-flight requests after a reload, but not forever
worker_shutdown_timeout 10s;
pid {run_dir}/nginx.pid;
error_log {log_dir}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    # Buffered: one write per request cost ~25% of the router's throughput (make bench)
    access_log {log_dir}/nginx-access.log combined buffer=64k flush=1s;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server_tokens off;
    client_max_body_size 50m;
    proxy_read_timeout 300s;
    proxy_send_timeout 300s;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}

    # A mini-paas API token sent to the router is never passed on to an app
    map $http_authorization $app_authorization {{
        default $http_authorization;
        "~*^bearer\\s+mp_" "";
    }}

    include {nginx_dir}/site.conf;
}}
"""


def _stopped_page(route: AppRoute) -> str:
    return (
        f"<!doctype html><title>{route.app_name} is stopped</title>"
        f"<h1>503: app {route.app_name} is not running</h1>"
        f"<p>Start or deploy it through the mini-paas API.</p>"
    )


def render_app_routes(route: AppRoute) -> tuple[str, str]:
    """Returns (http-level upstream block, server-level locations) for one app."""
    prefix = f"/apps/{route.app_id}"
    redirect = f"    location = {prefix} {{\n        return 308 {prefix}/$is_args$args;\n    }}\n"
    if route.kind is RouteKind.STOPPED:
        location = (
            f"    location {prefix}/ {{\n"
            f"        default_type text/html;\n"
            f"        add_header Retry-After 30 always;\n"
            f"        return 503 '{_stopped_page(route)}';\n"
            f"    }}\n"
        )
        return "", redirect + location
    upstream_name = f"minipaas_app_{route.app_id}"
    upstream = (
        f"upstream {upstream_name} {{\n    server 127.0.0.1:{route.port};\n    keepalive 32;\n}}\n"
    )
    location = (
        f"    location {prefix}/ {{\n"
        f"        proxy_pass http://{upstream_name}/;\n"
        f"{PROXY_HEADERS}"
        f"        proxy_set_header X-Forwarded-Prefix {prefix};\n"
        f"        proxy_set_header Authorization $app_authorization;\n"
        f"    }}\n"
    )
    return upstream, redirect + location


def render_site(routes: list[AppRoute], *, listen: str, api_address: str) -> str:
    """The whole site file: every app's route plus the API and the router's own endpoints."""
    upstreams: list[str] = []
    locations: list[str] = []
    for route in sorted(routes, key=lambda r: r.app_id):
        upstream, location = render_app_routes(route)
        if upstream:
            upstreams.append(upstream)
        locations.append(location)
    body_upstreams = "".join(upstreams)
    body_locations = "".join(locations)
    version = config_version(body_upstreams + body_locations, listen, api_address)
    return f"""\
# Rendered by mini-paas from the database; do not edit, it is overwritten.
{body_upstreams}
upstream minipaas_api {{
    server {api_address};
    keepalive 8;
}}

server {{
    listen {listen} default_server;

    location = /__router/health {{
        default_type text/plain;
        return 200 "ok\\n";
    }}

    location = /__router/version {{
        default_type text/plain;
        return 200 "{version}\\n";
    }}

    location = /api {{
        return 308 /api/;
    }}

    location /api/ {{
        proxy_pass http://minipaas_api/;
{PROXY_HEADERS}        proxy_set_header X-Forwarded-Prefix /api;
    }}

{body_locations}
    location / {{
        default_type application/json;
        return 404 '{{"detail": "no app is routed at this path; apps live under /apps/<id>/"}}';
    }}
}}
"""


def config_version(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def version_of(site_text: str) -> str | None:
    marker = "location = /__router/version {"
    index = site_text.find(marker)
    if index < 0:
        return None
    start = site_text.find('return 200 "', index) + len('return 200 "')
    return site_text[start : site_text.find("\\n", start)]
