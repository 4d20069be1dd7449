"""The HTTPS parts of the router's nginx.conf (dynamic_render.py): a TLS `listen` beside each
plain one, certificates chosen by SNI in Lua (minipaas_tls.lua), ACME HTTP-01 tokens, the
per-app redirect and HSTS, and the control paths under /tls/. Empty text without a TLS port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minipaas.router.dynamic_render import RouterConfig


def tls_http(c: RouterConfig) -> str:
    """HTTPS: a static fallback certificate (nginx needs one), the real one chosen by SNI."""
    if c.tls_listen is None or c.tls_dir is None:
        return ""
    return f"""\
    lua_shared_dict minipaas_tls {c.tls_mb}m;
    ssl_certificate {c.tls_dir}/fallback.crt;
    ssl_certificate_key {c.tls_dir}/fallback.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:minipaas_ssl:10m;
    ssl_certificate_by_lua_block {{
        require("minipaas_tls").choose_certificate()
    }}
"""


def tls_init(c: RouterConfig) -> str:
    if c.tls_listen is None or c.tls_dir is None:
        return ""
    port = c.tls_listen.rsplit(":", 1)[1]
    return f"""\
        require("minipaas_tls").init({{
            secret_file = "{c.secret_file}",
            state_file = "{c.tls_dir}/state.json",
            tls_port = {int(port)},
        }})
"""


def tls_listen(c: RouterConfig, *, default: bool = False) -> str:
    """The HTTPS twin of a server's `listen` line (the same server answers both)."""
    if c.tls_listen is None:
        return ""
    return f"        listen {c.tls_listen} ssl{' default_server' if default else ''};\n"


def acme_challenge(c: RouterConfig) -> str:
    if c.tls_listen is None:
        return ""
    return """
        # ACME HTTP-01: tokens the platform put in the router's memory while a CA validates
        location ^~ /.well-known/acme-challenge/ {
            content_by_lua_block {
                require("minipaas_tls").challenge()
            }
        }
"""


def tls_after_route(c: RouterConfig) -> str:
    if c.tls_listen is None:
        return ""
    return '                require("minipaas_tls").after_route()\n'


def tls_header_filter(c: RouterConfig) -> str:
    if c.tls_listen is None:
        return ""
    return """\
            header_filter_by_lua_block {
                require("minipaas_tls").header_filter()
            }
"""


def tls_control(c: RouterConfig) -> str:
    if c.tls_listen is None:
        return ""
    return """
        location /tls/ {
            content_by_lua_block {
                require("minipaas_tls").control()
            }
        }
"""
