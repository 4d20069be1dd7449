"""Pure rendering of the reload-free router's nginx.conf; routes are not in it, Lua has them."""

from __future__ import annotations

import hashlib
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from minipaas.router import tls_render, traffic
from minipaas.router.route import HOSTNAME

# Debian's libnginx-mod-http-lua; loaded here so our nginx never depends on /etc/nginx
NGINX_MODULES = (
    Path("/usr/lib/nginx/modules/ndk_http_module.so"),
    Path("/usr/lib/nginx/modules/ngx_http_lua_module.so"),
)
LUA_DIR = Path(__file__).parent / "lua"
ROUTE_TABLE = "minipaas_routes"  # the lua_shared_dict; the Lua module names it too
SECRET_HEADER = "X-Minipaas-Router-Secret"

# Paths are written into nginx directives and Lua string literals: no quotes, spaces, ';', '$'
_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._+-]*")
_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}")
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL

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

# Locations sit one level deeper in the config than these lines are written
_PROXY_HEADERS = textwrap.indent(PROXY_HEADERS, "    ")
# Every app response, by path or by host; the platform's own /api/ does not use this
APP_PROXY = (
    _PROXY_HEADERS
    + """\
            # A mini-paas API token sent to the router is never passed on to an app
            proxy_set_header Authorization $app_authorization;
            # An app may scope service workers to its own paths only
            proxy_hide_header Service-Worker-Allowed;
            # Otherwise an app could make nginx serve any location, the platform's /api/ included
            proxy_ignore_headers X-Accel-Redirect;
            log_by_lua_block {
                require("minipaas_router").done()
            }
"""
)


@dataclass(frozen=True)
class RouterConfig:
    """Everything the static config depends on; checked so only safe text reaches nginx."""

    nginx_dir: Path
    log_dir: Path
    run_dir: Path
    control_socket: Path
    secret_file: Path
    snapshot_file: Path
    journal_file: Path
    listen: str
    api_address: str
    platform_host: str
    run_as_root: bool
    path_routes: bool = True
    table_mb: int = 64
    metrics: bool = True  # per-app traffic counters (traffic.py)
    metrics_mb: int = 16
    lua_dir: Path = LUA_DIR
    # HTTPS (router/tls.py): listen address, None for none; tls_dir holds the fallback
    # certificate nginx starts with and the state file its Lua loads
    tls_listen: str | None = None
    tls_dir: Path | None = None
    tls_mb: int = 16

    def __post_init__(self) -> None:
        for name in (
            "nginx_dir",
            "log_dir",
            "run_dir",
            "control_socket",
            "secret_file",
            "snapshot_file",
            "journal_file",
            "lua_dir",
            "tls_dir",
        ):
            if getattr(self, name) is None:
                continue
            path = str(getattr(self, name))
            if not _SAFE_PATH.fullmatch(path) or "/../" in f"{path}/":
                raise ValueError(
                    f"{name} {path!r} must be an absolute path of letters, digits and . _ + - /"
                )
        if len(str(self.control_socket).encode()) > _UNIX_PATH_MAX:
            raise ValueError(
                f"control socket path {self.control_socket} is longer than {_UNIX_PATH_MAX} "
                "bytes (a unix socket limit); use a shorter DATA_DIR"
            )
        for name in ("listen", "api_address"):
            if not _ADDRESS.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must look like 127.0.0.1:8080 or [::1]:8080")
        if self.tls_listen is not None:
            if not _ADDRESS.fullmatch(self.tls_listen):
                raise ValueError("tls_listen must look like 127.0.0.1:443 or [::1]:443")
            if self.tls_dir is None:
                raise ValueError("tls_listen needs tls_dir (the fallback certificate's place)")
        if type(self.tls_mb) is not int or not 1 <= self.tls_mb <= 1024:
            raise ValueError("tls_mb must be an integer between 1 and 1024")
        if not HOSTNAME.fullmatch(self.platform_host):
            raise ValueError("platform_host must be a lowercase host name")
        if type(self.table_mb) is not int or not 1 <= self.table_mb <= 4096:
            raise ValueError("table_mb must be an integer between 1 and 4096")
        if type(self.metrics_mb) is not int or not 1 <= self.metrics_mb <= 1024:
            raise ValueError("metrics_mb must be an integer between 1 and 1024")


@dataclass(frozen=True)
class RenderedConfig:
    text: str
    version: str  # Lua reports it, so a caller knows which config nginx really runs


def render_router_config(config: RouterConfig) -> RenderedConfig:
    """The whole nginx.conf: platform server, app-host server, control socket, Lua hooks."""
    placeholder = "@@version@@"
    text = _render(config, placeholder)
    version = hashlib.sha256(text.encode()).hexdigest()[:16]
    return RenderedConfig(text.replace(placeholder, version), version)


def _render(c: RouterConfig, version: str) -> str:
    return f"""\
{_main(c)}
http {{
{_http_settings(c)}
{_lua(c, version)}
{_servers(c)}}}
"""


def _main(c: RouterConfig) -> str:
    user = "user nobody nogroup;\n" if c.run_as_root else ""
    modules = "".join(f"load_module {module};\n" for module in NGINX_MODULES)
    return f"""\
# Written by mini-paas. Routes are not in this file: they live in nginx's shared memory, set
# through the control socket and restored from {c.snapshot_file.parent} when nginx starts.
{modules}{user}worker_processes auto;
# Old workers finish in-flight requests after a reload (only structural changes reload)
worker_shutdown_timeout 10s;
pid {c.run_dir}/nginx.pid;
error_log {c.log_dir}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}
"""


def _http_settings(c: RouterConfig) -> str:
    tmp = c.nginx_dir / "tmp"
    return f"""\
    # nginx's "combined" with the path as the client sent it, without the query string:
    # build args (POST /apps/{{id}}/builds?build_arg=...) and an app's own query tokens do
    # not belong in a log file (the error log still names a request's line when its
    # upstream fails)
    map $request_uri $minipaas_logged_path {{
        "~^(?<path>[^?]*)" $path;
    }}
    log_format minipaas '$remote_addr - $remote_user [$time_local] '
                        '"$request_method $minipaas_logged_path $server_protocol" $status '
                        '$body_bytes_sent "$http_referer" "$http_user_agent"';
    # Buffered: one write per request cost ~25% of the router's throughput (make bench)
    access_log {c.log_dir}/nginx-access.log minipaas buffer=64k flush=1s;
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

    map $http_authorization $app_authorization {{
        default $http_authorization;
        "~*^bearer\\s+mp_" "";
    }}
"""


def _lua(c: RouterConfig, version: str) -> str:
    """The route table, its Lua code, and the one upstream every app goes through."""
    return f"""\
    lua_package_path "{c.lua_dir}/?.lua;;";
    lua_shared_dict {ROUTE_TABLE} {c.table_mb}m;
    lua_shared_dict minipaas_inflight 1m;
{_traffic_dict(c)}{tls_render.tls_http(c)}    init_by_lua_block {{
        require("minipaas_router").init({{
            version = "{version}",
            secret_file = "{c.secret_file}",
            snapshot_file = "{c.snapshot_file}",
            journal_file = "{c.journal_file}",
            traffic = {_traffic_options(c)},
        }})
{tls_render.tls_init(c)}    }}
    init_worker_by_lua_block {{
        require("minipaas_router").init_worker()
    }}

    # One upstream for every app: the balancer picks <node address>:<port> per request
    upstream minipaas_app {{
        server 0.0.0.1:1;  # never used; nginx wants a server line
        balancer_by_lua_block {{
            require("minipaas_router").balance()
        }}
        # After the balancer: the keepalive module wraps whatever peer it picked
        keepalive 64;
    }}

    upstream minipaas_api {{
        server {c.api_address};
        keepalive 8;
    }}
"""


def _traffic_dict(c: RouterConfig) -> str:
    if not c.metrics:
        return ""
    return f"    lua_shared_dict minipaas_traffic {c.metrics_mb}m;\n"


def _traffic_options(c: RouterConfig) -> str:
    """Lua table literal: the bucket bounds come from traffic.py, which reads the counts."""

    def lua_list(values: tuple[int, ...]) -> str:
        return "{" + ", ".join(str(v) for v in values) + "}"

    return (
        f"{{ enabled = {'true' if c.metrics else 'false'}, "
        f"buckets = {lua_list(traffic.FINE_BUCKETS_MS)}, "
        f"coarse_buckets = {lua_list(traffic.PROMETHEUS_BUCKETS_MS)}, "
        f"window = {traffic.WINDOW_MINUTES}, minute_ttl = {traffic.MINUTE_TTL_SECONDS}, "
        f"flush_every = {traffic.FLUSH_SECONDS} }}"
    )


def _servers(c: RouterConfig) -> str:
    return _router_address_server(c) + _platform_server(c) + _app_and_control_servers(c)


def _router_address_server(c: RouterConfig) -> str:
    return f"""\
    # The router's own address (a bare IP, localhost or no Host): the JSON API at /api/ and
    # the apps' path routes. Pages that keep a token (dashboard, docs) are not served here:
    # app content shares this origin.
    server {{
        listen {c.listen} default_server;
{tls_render.tls_listen(c, default=True)}\
        server_name localhost "" "~^[0-9.]+$" "~^\\[[0-9a-f:.]+\\]$";

{_ROUTER_HEALTH}
        location ~ "^/api/(ui|docs|redoc)$" {{
            return 308 http://{c.platform_host}:$server_port$request_uri;
        }}
{_api_locations()}{_path_routes(c) if c.path_routes else ""}
        location / {{
            default_type application/json;
            return 404 '{{"detail": "{_not_found(c)}"}}';
        }}
    }}

"""


def _platform_server(c: RouterConfig) -> str:
    return f"""\
    # The platform's own origin: the API, its docs and the dashboard; never app content
    server {{
        listen {c.listen};
{tls_render.tls_listen(c)}        server_name {c.platform_host};

{_ROUTER_HEALTH}
        location = / {{
            return 308 /api/ui;
        }}
{_api_locations()}
        location / {{
            default_type application/json;
            return 404 '{{"detail": "the platform serves /api/ here; apps have their own hosts"}}';
        }}
    }}

"""


def _app_and_control_servers(c: RouterConfig) -> str:
    return f"""\
    # Every other host name: an app's <name>.<apps domain> or one of its own domains
    server {{
        listen {c.listen};
{tls_render.tls_listen(c)}        server_name "~.";
{tls_render.acme_challenge(c)}
        location / {{
            access_by_lua_block {{
                require("minipaas_router").route_by_host()
{tls_render.tls_after_route(c)}            }}
            proxy_pass http://minipaas_app;
{APP_PROXY}            # At its own origin an app has no prefix; drop a client's claim of one
            proxy_set_header X-Forwarded-Prefix "";
{tls_render.tls_header_filter(c)}        }}
    }}

    # Control: a unix socket only the platform's processes can open, plus a shared secret
    server {{
        listen unix:{c.control_socket};
        access_log off;
        # A full table (replace) arrives in one body; keep it in memory
        client_max_body_size 64m;
        client_body_buffer_size 64m;

        location / {{
            content_by_lua_block {{
                require("minipaas_router").control()
            }}
        }}
{tls_render.tls_control(c)}    }}
"""


_ROUTER_HEALTH = """\
        location = /__router/health {
            access_log off;
            default_type text/plain;
            return 200 "ok\\n";
        }
"""


def _api_locations() -> str:
    return f"""
        location = /api {{
            return 308 /api/;
        }}

        location /api/ {{
            proxy_pass http://minipaas_api/;
{_PROXY_HEADERS}            proxy_set_header X-Forwarded-Prefix /api;
            # Uploads (build contexts) stream to the API, which bounds and checks them as they
            # come; buffered, each was a second copy on disk and an error-log line holding
            # its query string (build args)
            proxy_request_buffering off;
        }}
"""


def _path_routes(c: RouterConfig) -> str:
    """/apps/<id>/ on the platform's origin: prefix stripped, /apps/<id> redirected."""
    return f"""
        location ~ "^/apps/(?<minipaas_app_id>[1-9][0-9]{{0,9}})$" {{
            content_by_lua_block {{
                require("minipaas_router").redirect_by_path()
            }}
        }}

        location ~ "^/apps/(?<minipaas_app_id>[1-9][0-9]{{0,9}})/" {{
            access_by_lua_block {{
                require("minipaas_router").route_by_path()
            }}
            # The decoded path goes on re-escaped, as `proxy_pass .../;` did; (?s): a %0A in
            # the path is part of it too
            rewrite "(?s)^/apps/[0-9]+(/.*)$" $1 break;
            proxy_pass http://minipaas_app;
{APP_PROXY}            proxy_set_header X-Forwarded-Prefix /apps/$minipaas_app_id;
            # Every app shares this origin: one app must not wipe the others' storage
            proxy_hide_header Clear-Site-Data;
        }}
"""


def _not_found(c: RouterConfig) -> str:
    if c.path_routes:
        return "no app is routed at this path; apps live under /apps/<id>/"
    return "no app is routed at this path; apps live at their own host names"
