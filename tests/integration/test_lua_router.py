"""The reload-free router against a real nginx with the Lua module; no Docker needed.

Apps here are small Python HTTP servers on 127.0.0.1; nginx, its control socket and its
snapshot live in a temp DATA_DIR. Each test starts from an empty route table.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from minipaas.config import Settings
from minipaas.router.control import ControlClient
from minipaas.router.dynamic_render import (
    NGINX_MODULES,
    RenderedConfig,
    RouterConfig,
    render_router_config,
)
from minipaas.router.lua_router import LuaRouter, Route, RouteConflictError, RouteKind, RouterError
from tests.support.stack import free_port


class _AppHandler(http.server.BaseHTTPRequestHandler):
    """Answers with what it received, plus headers an app must not get past the router."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the router's upstream keepalive expects

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._upgrade()
            return
        name = getattr(self.server, "app_name", "app")
        if self.path == "/accel":
            self._send({"app": name}, {"X-Accel-Redirect": "/api/secret"})
            return
        self._send(
            {
                "app": name,
                "path": self.path,
                "headers": {key.lower(): value for key, value in self.headers.items()},
            },
            {"Service-Worker-Allowed": "/", "X-App": name},
        )

    do_POST = do_GET

    def _send(self, data: object, headers: dict[str, str]) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _upgrade(self) -> None:
        # Enough of a websocket to prove the tunnel: 101, then echo raw bytes once
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        data = self.rfile.read1(1024)
        self.wfile.write(b"echo:" + data)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class App:
    name: str
    port: int
    server: http.server.ThreadingHTTPServer


def _serve(name: str) -> App:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AppHandler)
    server.daemon_threads = True
    server.app_name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return App(name, server.server_address[1], server)


@dataclass
class Rig:
    router: LuaRouter
    settings: Settings
    blue: App
    green: App
    api: App
    http: httpx.Client

    def get(
        self, path: str, host: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """GET through the router; `host` is the Host header (None: the router's address)."""
        sent = dict(headers or {})
        if host is not None:
            sent["Host"] = host
        return self.http.get(path, headers=sent)

    def get_safely(self, path: str, host: str) -> httpx.Response | None:
        """None when nothing answers."""
        try:
            return self.get(path, host)
        except httpx.TransportError:
            return None

    def route(
        self, app_id: int, name: str, app: App | None, domains: tuple[str, ...] = ()
    ) -> Route:
        kind = RouteKind.PROXY if app else RouteKind.STOPPED
        port = app.port if app else None
        return self.router.route(
            app_id=app_id, app_name=name, kind=kind, port=port, domains=domains
        )


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    missing = [str(module) for module in NGINX_MODULES if not module.exists()]
    if missing or shutil.which("nginx") is None:
        pytest.fail(f"nginx with the Lua module is needed ({missing}); run scripts/install-deps.sh")
    # A short DATA_DIR: the control socket's path must fit a unix socket address
    data_dir = Path(tempfile.mkdtemp(prefix="mpr-"))
    blue, green, api = _serve("blue"), _serve("green"), _serve("api")
    settings = Settings(
        data_dir=data_dir,
        router_host="127.0.0.1",
        router_port=free_port(),
        router_tls_port=0,  # no HTTPS here (the environment may name a port)
        app_host="127.0.0.1",
        app_port=api.port,
        _env_file=None,
    )
    router = LuaRouter(settings)
    client = httpx.Client(base_url=settings.router_probe_url, timeout=10)
    try:
        router.ensure_running()
        yield Rig(router, settings, blue, green, api, client)
    finally:
        client.close()
        router.stop()
        for app in (blue, green, api):
            app.server.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def empty_table(rig: Rig) -> None:
    rig.router.ensure_running()
    rig.router.replace_all([])


def test_host_routes_reach_the_app_whatever_the_case_or_port(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue, domains=("www.example.test",)))

    for host in ("web.apps.localhost", "WEB.Apps.Localhost:8080", "www.example.test."):
        response = rig.get("/a/b?c=1", host, headers={"X-Forwarded-Prefix": "/evil"})
        assert response.status_code == 200, (host, response.text)
        seen = response.json()
        assert seen["app"] == "blue"
        assert seen["path"] == "/a/b?c=1"
        headers = seen["headers"]
        assert headers["host"] == host
        assert headers["x-forwarded-host"] == host
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-forwarded-port"] == str(rig.settings.router_port)
        # at its own origin an app has no prefix, whatever a client claims
        assert "x-forwarded-prefix" not in headers


def _raw_get(rig: Rig, request_line_target: str, host: str) -> bytes:
    """One request with the target written as given (an absolute URL, say)."""
    with socket.create_connection(("127.0.0.1", rig.settings.router_port)) as sock:
        request = f"GET {request_line_target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        return _read_all(sock)


def test_an_app_is_never_sent_a_host_other_than_the_one_routed(rig: Rig) -> None:
    """nginx routes an absolute URL in the request line by its host; the app gets Host."""
    rig.router.set_route(rig.route(1, "web", rig.blue))
    port = rig.settings.router_port

    for target in ("http://web.apps.localhost/reset", f"http://127.0.0.1:{port}/apps/1/reset"):
        answer = _raw_get(rig, target, "evil.example")
        assert b" 400 " in answer.split(b"\r\n", 1)[0], answer
        assert b"different hosts" in answer
        assert b'"app": "blue"' not in answer
    # the same host in both (any case or port) is routed as usual
    answer = _raw_get(rig, "http://web.apps.localhost/x", f"WEB.apps.localhost:{port}")
    assert b" 200 " in answer.split(b"\r\n", 1)[0], answer
    assert b'"app": "blue"' in answer


def test_path_routes_strip_the_prefix_and_redirect_the_bare_path(rig: Rig) -> None:
    rig.router.set_route(rig.route(7, "web", rig.blue))

    seen = rig.get("/apps/7/x/a%20b?y=1").json()
    assert seen["path"] == "/x/a%20b?y=1"
    assert seen["headers"]["x-forwarded-prefix"] == "/apps/7"
    assert rig.get("/apps/7/").json()["path"] == "/"

    redirect = rig.get("/apps/7?q=1")
    assert redirect.status_code == 308
    assert redirect.headers["location"].endswith("/apps/7/?q=1")
    assert rig.get("/apps/8").status_code == 404
    assert rig.get("/apps/007/").status_code == 404


def test_stopped_app_answers_503_page_with_retry_after(rig: Rig) -> None:
    rig.router.set_route(rig.route(3, "sleepy", None))

    for response in (rig.get("/apps/3/"), rig.get("/", "sleepy.apps.localhost")):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        assert response.headers["content-type"].startswith("text/html")
        assert "app sleepy is not running" in response.text


def test_unknown_hosts_and_paths_answer_404_json(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))
    rig.router.remove_route(1)

    for response in (
        rig.get("/", "web.apps.localhost"),
        rig.get("/", "nobody.example.test"),
        rig.get("/apps/1/"),
        rig.get("/apps/1"),
        rig.get("/elsewhere"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert "no app is routed" in response.json()["detail"]


def test_platform_host_and_bare_address_reach_the_api_but_app_hosts_do_not(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))

    for host in ("minipaas.localhost", "MINIPAAS.localhost:80", None):
        seen = rig.get("/api/health", host).json()
        assert seen["app"] == "api", host
        assert seen["path"] == "/health"
        assert seen["headers"]["x-forwarded-prefix"] == "/api"
    assert rig.get("/api", "minipaas.localhost").status_code == 308
    # HTTP/1.0 without any Host header: the platform too
    with socket.create_connection(("127.0.0.1", rig.settings.router_port)) as sock:
        sock.sendall(b"GET /api/health HTTP/1.0\r\n\r\n")
        answer = _read_all(sock)
    assert b" 200 " in answer.split(b"\r\n", 1)[0]
    assert b'"app": "api"' in answer
    # On an app's own origin every path is the app's, /api/ and /__router/ included
    assert rig.get("/api/health", "web.apps.localhost").json()["app"] == "blue"
    assert rig.get("/__router/health", "web.apps.localhost").json()["app"] == "blue"


def test_platform_tokens_never_reach_an_app(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))

    for path, host in (("/apps/1/", None), ("/", "web.apps.localhost")):
        for token in ("Bearer mp_abc123", "bearer   MP_x"):
            seen = rig.get(path, host, headers={"Authorization": token}).json()
            assert "authorization" not in seen["headers"], (path, token)
        seen = rig.get(path, host, headers={"Authorization": "Bearer app-own-token"}).json()
        assert seen["headers"]["authorization"] == "Bearer app-own-token"


def test_app_responses_cannot_set_headers_that_reach_beyond_the_app(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))

    for path, host in (("/apps/1/", None), ("/", "web.apps.localhost")):
        response = rig.get(path, host)
        assert response.headers["x-app"] == "blue"
        assert "service-worker-allowed" not in response.headers
    # nginx would otherwise serve the location the app names, the platform's API included
    for path, host in (("/apps/1/accel", None), ("/accel", "web.apps.localhost")):
        response = rig.get(path, host)
        assert response.json() == {"app": "blue"}
        assert "x-accel-redirect" not in response.headers


def test_websocket_upgrade_is_tunnelled(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))

    with socket.create_connection(("127.0.0.1", rig.settings.router_port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: web.apps.localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(b"hello")
        assert _read_all(sock).endswith(b"echo:hello")


def test_route_changes_never_reload_nginx(rig: Rig) -> None:
    master, workers = rig.router.pid(), rig.router.worker_pids()
    assert workers

    for i in range(100):
        app = (rig.blue, rig.green)[i % 2]
        rig.router.set_route(rig.route(1, "web", app, domains=(f"d{i % 3}.example.test",)))
        # live at once: the very next request goes to the new port
        assert rig.get("/", "web.apps.localhost").json()["app"] == app.name
        assert rig.get("/", f"d{i % 3}.example.test").json()["app"] == app.name
        # the domain the app had before is gone with the change
        assert rig.get("/", f"d{(i - 1) % 3}.example.test").status_code == 404

    assert rig.router.pid() == master
    assert rig.router.worker_pids() == workers
    assert rig.router.ensure_running() is False  # nothing structural changed: no reload


def test_replace_all_makes_exactly_that_table(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "one", rig.blue, domains=("moving.example.test",)))
    rig.router.set_route(rig.route(2, "two", rig.green))

    wanted = [
        rig.route(1, "one", rig.blue),
        rig.route(3, "three", rig.green, domains=("moving.example.test",)),
    ]
    rig.router.replace_all(wanted)

    assert rig.router.live_table() == {route.app_id: route for route in wanted}
    assert rig.get("/", "two.apps.localhost").status_code == 404
    assert rig.get("/", "moving.example.test").json()["app"] == "green"
    assert rig.get("/", "one.apps.localhost").json()["app"] == "blue"
    with pytest.raises(ValueError, match="listed by apps"):
        rig.router.replace_all([wanted[1], rig.route(4, "four", rig.blue, wanted[1].hosts[:1])])


def test_kill_9_then_start_serves_every_route_from_the_snapshot(rig: Rig) -> None:
    rig.router.replace_all([rig.route(i, f"app{i}", rig.blue) for i in range(10, 60)])
    rig.router.set_route(rig.route(1, "web", rig.blue, domains=("old.example.test",)))
    rig.router.set_route(rig.route(1, "web", rig.green, domains=("new.example.test",)))
    rig.router.set_route(rig.route(2, "sleepy", None))
    rig.router.remove_route(11)
    before = rig.router.live_table()

    master = rig.router.pid()
    assert master is not None
    for pid in (master, *rig.router.worker_pids()):
        os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: rig.router.pid() is None)
    assert rig.get_safely("/", "web.apps.localhost") is None

    started = time.monotonic()
    assert rig.router.ensure_running() is True
    assert rig.get("/", "web.apps.localhost").json()["app"] == "green"
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed

    assert rig.router.live_table() == before
    assert rig.get("/", "new.example.test").json()["app"] == "green"
    assert rig.get("/", "old.example.test").status_code == 404
    assert rig.get("/apps/2/").status_code == 503
    assert rig.get("/apps/11/").status_code == 404
    assert rig.get("/apps/59/").json()["app"] == "blue"


def test_a_refused_update_keeps_the_previous_route_serving(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue, domains=("shop.example.test",)))
    rig.router.set_route(rig.route(2, "other", rig.green))
    journal = rig.router.snapshot.journal_file.read_text()

    # another app's domain
    with pytest.raises(RouteConflictError, match=r"shop\.example\.test"):
        rig.router.set_route(rig.route(2, "other", rig.blue, domains=("shop.example.test",)))
    # values the Python side would never send are refused by the Lua side too
    client = rig.router._control()
    with pytest.raises(RouterError, match="port"):
        client.request("PUT", "/apps/1", {"id": 1, "kind": "proxy", "name": "web", "port": 0})
    with pytest.raises(RouterError, match="host names"):
        client.request(
            "PUT", "/apps/1", {"id": 1, "kind": "stopped", "name": "web", "hosts": ["a b"]}
        )
    with pytest.raises(RouterError, match="JSON object"):
        client.request("PUT", "/apps/1", "web")
    with pytest.raises(RouterError, match="no body"):
        client.request("PUT", "/apps/1", None)
    # a host the app may not have never leaves Python
    with pytest.raises(ValueError, match="platform"):
        rig.router.set_route(rig.route(1, "web", rig.green, domains=("minipaas.localhost",)))
    with pytest.raises(ValueError, match="under the apps domain"):
        rig.router.set_route(rig.route(1, "web", rig.green, domains=("other.apps.localhost",)))

    assert rig.get("/", "shop.example.test").json()["app"] == "blue"
    assert rig.get("/", "other.apps.localhost").json()["app"] == "green"
    assert rig.get("/apps/1/").json()["app"] == "blue"
    assert rig.router.snapshot.journal_file.read_text() == journal


def test_a_full_table_refuses_the_update_and_keeps_what_was_there(rig: Rig) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mpr-"))
    settings = rig.settings.model_copy(
        update={"data_dir": data_dir, "router_port": free_port(), "router_table_mb": 1}
    )
    small = LuaRouter(settings)
    small.ensure_running()
    try:
        first = rig.route(1, "web", rig.blue, domains=("shop.example.test",))
        small.set_route(first)
        long_names = tuple(f"{'x' * 60}.{i}.{'y' * 60}.{'z' * 60}.test" for i in range(60))
        app_id = 2
        with pytest.raises(RouterError, match="route table") as refused:
            for app_id in range(2, 20_000):
                small.set_route(Route(app_id, f"a{app_id}", RouteKind.PROXY, rig.green.port))
        assert not isinstance(refused.value, RouteConflictError)
        before = small.live_table()
        assert app_id not in before  # the refused app is not half there
        with pytest.raises(RouterError, match="route table"):
            small.set_route(rig.route(1, "web", rig.green, domains=long_names))

        assert small.live_table() == before
        assert before[1] == first
        router_http = httpx.Client(base_url=settings.router_probe_url, timeout=10)
        with router_http:
            shop = router_http.get("/", headers={"Host": "shop.example.test"})
            assert shop.json()["app"] == "blue"
            assert router_http.get("/", headers={"Host": long_names[0]}).status_code == 404
            assert router_http.get(f"/apps/{app_id}/").status_code == 404
        assert small.snapshot.load() == before
    finally:
        small.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_an_update_while_nginx_is_down_fails_and_changes_nothing(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))
    rig.router.stop()
    try:
        with pytest.raises(RouterError, match="control socket"):
            rig.router.set_route(rig.route(1, "web", rig.green))
        with pytest.raises(RouterError):
            rig.router.remove_route(1)
    finally:
        rig.router.ensure_running()
    assert rig.get("/", "web.apps.localhost").json()["app"] == "blue"


def test_control_needs_the_secret_and_is_not_on_the_public_listener(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))
    socket_path = rig.settings.router_control_socket

    for secret in ("x" * 43, ""):
        intruder = ControlClient(socket_path, secret)
        with pytest.raises(RouterError, match="secret"):
            intruder.request("PUT", "/apps/1", rig.route(1, "web", rig.green).to_json())
        with pytest.raises(RouterError, match="secret"):
            intruder.request("GET", "/apps")
    assert rig.get("/", "web.apps.localhost").json()["app"] == "blue"

    # Only the platform's user may reach the socket at all
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700
    assert rig.settings.router_control_secret_file.stat().st_mode & 0o777 == 0o600
    # The public listener has no control paths, on the platform's host or any other
    secret = rig.settings.router_control_secret_file.read_text().strip()
    change = json.dumps({"routes": [rig.route(1, "web", rig.green).to_json()]}).encode()
    for host in (None, "minipaas.localhost", "nobody.example.test"):
        for method, path in (("GET", "/status"), ("GET", "/apps"), ("PUT", "/apps")):
            response = rig.http.request(
                method,
                path,
                headers={"X-Minipaas-Router-Secret": secret, **({"Host": host} if host else {})},
                content=change,
            )
            assert response.status_code == 404, (host, method, path)
    assert rig.get("/", "web.apps.localhost").json()["app"] == "blue"


def test_a_refused_config_never_replaces_the_working_one(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))
    before = rig.router.conf.read_text()

    def broken(config: RouterConfig) -> RenderedConfig:
        rendered = render_router_config(config)
        text = rendered.text.replace("http {", "http {\n    this_is_not_a_directive on;", 1)
        return RenderedConfig(text, "broken")

    monkeypatch.setattr("minipaas.router.lua_router.render_router_config", broken)
    with pytest.raises(RouterError, match="this_is_not_a_directive"):
        rig.router.ensure_running()
    monkeypatch.undo()

    assert rig.router.conf.read_text() == before
    assert rig.router.healthy()
    assert rig.get("/", "web.apps.localhost").json()["app"] == "blue"
    assert rig.router.ensure_running() is False


def test_a_structural_change_reloads_once_and_keeps_the_table(rig: Rig) -> None:
    rig.router.set_route(rig.route(1, "web", rig.blue))
    workers = rig.router.worker_pids()
    no_paths = LuaRouter(rig.settings.model_copy(update={"router_path_routes": False}))
    try:
        assert no_paths.ensure_running() is True
        _wait_until(lambda: rig.router.worker_pids().isdisjoint(workers))
        assert rig.get("/apps/1/").status_code == 404
        assert rig.get("/", "web.apps.localhost").json()["app"] == "blue"
    finally:
        workers = rig.router.worker_pids()
        assert rig.router.ensure_running() is True
    # until they exit, old workers may answer a kept-alive connection with the old config
    _wait_until(lambda: rig.router.worker_pids().isdisjoint(workers))
    assert rig.get("/apps/1/").json()["app"] == "blue"


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_a_publish_during_a_full_sync_is_not_undone_by_its_older_read(rig: Rig) -> None:
    """The reconciler read the database (app running) just before a stop published the 503
    page: the sync must not write its older read over the newer publish."""
    running = rig.route(1, "web", rig.blue)
    stopped = rig.route(1, "web", None)
    read_started, publish_done = threading.Event(), threading.Event()

    def stale_read() -> list[Route]:
        read_started.set()
        publish_done.wait(timeout=1)  # the publish waits for the lock meanwhile
        return [running]

    def publish_stop() -> None:
        read_started.wait(timeout=5)
        rig.router.publish(1, lambda: stopped)
        publish_done.set()

    publisher = threading.Thread(target=publish_stop)
    publisher.start()
    assert rig.router.sync(stale_read) is True
    publisher.join(timeout=10)
    assert rig.router.live_table() == {1: stopped}
    assert rig.get("/", "web.apps.localhost").status_code == 503


def test_a_route_the_host_policy_refuses_is_left_out_of_a_sync_not_every_route(
    rig: Rig,
) -> None:
    """One app's route naming the platform's host (made before a rule existed, say) made the
    reconciler's every full sync fail: no other app's drift was ever repaired."""
    good = rig.route(1, "web", rig.blue)
    bad = rig.route(2, "evil", rig.green, domains=(rig.settings.platform_host,))
    assert rig.router.sync(lambda: [good, bad]) is True
    assert rig.router.live_table() == {1: good}
    assert rig.get("/", "web.apps.localhost").json()["app"] == "blue"


def test_the_access_log_keeps_paths_without_their_query_strings(rig: Rig) -> None:
    """Build args travel in a query string (POST /apps/{id}/builds?build_arg=TOKEN=...), as
    an app's own tokens may: the router's access log keeps the path only, as sent (a path
    route's /apps/<id> prefix included)."""
    rig.router.set_route(rig.route(1, "web", rig.blue))
    marker = f"q{os.getpid()}x{time.monotonic_ns()}"
    assert rig.get(f"/{marker}/page?build_arg=TOKEN%3D{marker}-secret", "web.apps.localhost")
    assert rig.get(f"/apps/1/{marker}/by-path?t={marker}-secret")
    log = rig.settings.log_dir / "nginx-access.log"

    def logged() -> list[str]:
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if marker in line]

    deadline = time.monotonic() + 10  # the log is written in buffers, flushed every second
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while len(logged()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = logged()
    assert [f'"GET /{marker}/page HTTP/1.1" 200' in line for line in lines[:1]] == [True], lines
    assert [f'"GET /apps/1/{marker}/by-path HTTP/1.1" 200' in x for x in lines[1:]] == [True]
    assert "secret" not in "".join(lines)
