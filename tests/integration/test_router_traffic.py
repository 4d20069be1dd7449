"""Per-app traffic metrics counted by the real nginx router (Lua), read over its control socket.

Apps are small Python HTTP servers on 127.0.0.1 that answer the status and delay a path asks
for; nginx runs in a temp DATA_DIR. No Docker needed.
"""

from __future__ import annotations

import http.server
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from minipaas.config import Settings
from minipaas.router import traffic
from minipaas.router.dynamic_render import NGINX_MODULES
from minipaas.router.lua_router import LuaRouter, Route, RouteKind
from tests.support.stack import free_port


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /<status>/<delay ms>: answers that status after that delay."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body are two writes: without this, Nagle + delayed ACK add 40 ms each
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        status = int(parts[0]) if parts and parts[0].isdigit() else 200
        if len(parts) > 1 and parts[1].isdigit():
            time.sleep(int(parts[1]) / 1000)
        body = b"x" * 100
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve() -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _settle() -> None:
    """nginx workers add their counts to the shared dict every FLUSH_SECONDS."""
    time.sleep(traffic.FLUSH_SECONDS * 4)


@dataclass
class Rig:
    router: LuaRouter
    ports: tuple[int, int]
    http: httpx.Client

    def route(self, app_id: int, port: int | None) -> Route:
        kind = RouteKind.PROXY if port else RouteKind.STOPPED
        return self.router.route(app_id=app_id, app_name=f"app{app_id}", kind=kind, port=port)

    def host(self, app_id: int) -> dict[str, str]:
        return {"Host": f"app{app_id}.apps.localhost"}


@contextmanager
def _router(**overrides: object) -> Iterator[Rig]:
    missing = [str(module) for module in NGINX_MODULES if not module.exists()]
    if missing or shutil.which("nginx") is None:
        pytest.fail(f"nginx with the Lua module is needed ({missing}); run scripts/install-deps.sh")
    data_dir = Path(tempfile.mkdtemp(prefix="mpt-"))
    (first, one), (second, two) = _serve(), _serve()
    settings = Settings(
        data_dir=data_dir,
        router_host="127.0.0.1",
        router_port=free_port(),
        router_tls_port=0,  # no HTTPS here (the environment may name a port)
        app_host="127.0.0.1",
        app_port=free_port(),
        _env_file=None,
        **overrides,  # type: ignore[arg-type]
    )
    router = LuaRouter(settings)
    client = httpx.Client(base_url=settings.router_probe_url, timeout=10)
    try:
        router.ensure_running()
        yield Rig(router, (one, two), client)
    finally:
        client.close()
        router.stop()
        first.shutdown()
        second.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with _router() as started:
        yield started


def test_counts_are_exact_per_app_status_class_and_method(rig: Rig) -> None:
    a, b = rig.ports
    rig.router.replace_all([rig.route(11, a), rig.route(12, b), rig.route(13, None)])
    sent = {11: [200] * 30 + [404] * 10, 12: [200] * 20 + [500] * 5 + [302] * 2, 13: [503] * 7}
    for status in sent[11]:  # by host
        assert rig.http.get(f"/{status}", headers=rig.host(11)).status_code == status
    for status in sent[12]:  # by path
        assert rig.http.get(f"/apps/12/{status}").status_code == status
    for _ in range(3):
        assert rig.http.post("/apps/12/200").status_code == 200
    for _ in sent[13]:  # the router's own page for a stopped app
        assert rig.http.get("/", headers=rig.host(13)).status_code == 503
    # not an app's traffic: the router's health, unknown hosts
    rig.http.get("/__router/health")
    rig.http.get("/", headers={"Host": "nobody.apps.localhost"})
    _settle()

    totals = traffic.totals(rig.router)
    assert totals[11].by_status_class == {"1xx": 0, "2xx": 30, "3xx": 0, "4xx": 10, "5xx": 0}
    assert totals[12].by_status_class == {"1xx": 0, "2xx": 23, "3xx": 2, "4xx": 0, "5xx": 5}
    assert totals[13].by_status_class["5xx"] == 7 and totals[13].requests == 7
    assert totals[11].by_method["GET"] == 40
    assert (totals[12].by_method["GET"], totals[12].by_method["POST"]) == (27, 3)
    assert totals[11].bytes_sent > 40 * 100
    assert sum(totals[11].buckets) == 40 and totals[11].in_flight == 0
    hour = traffic.last_hour(rig.router, 12)
    assert len(hour.minutes) == traffic.WINDOW_MINUTES + 1
    summary = hour.summary()
    assert summary is not None
    assert summary.requests == 30 and summary.by_status_class["5xx"] == 5
    assert summary.rate_5xx == pytest.approx(5 / 30)
    assert traffic.last_hour(rig.router, 99).summary().requests == 0  # type: ignore[union-attr]


@pytest.mark.alone  # a percentile within 10% of the client's
def test_p95_is_within_ten_percent_or_one_bucket_of_the_client(rig: Rig) -> None:
    a, _ = rig.ports
    rig.router.replace_all([rig.route(21, a)])
    rng = random.Random(12)
    measured = []
    for _ in range(300):
        delay = rng.choice((0, 5, 10, 20, 40, 80))
        started = time.perf_counter()
        assert rig.http.get(f"/200/{delay}", headers=rig.host(21)).status_code == 200
        measured.append((time.perf_counter() - started) * 1000)
    _settle()
    client_p95 = sorted(measured)[int(0.95 * len(measured)) - 1]
    summary = traffic.last_hour(rig.router, 21).summary()
    assert summary is not None and summary.p95_ms is not None and summary.requests == 300
    # Prometheus' few buckets hold exactly what the fine ones do up to each bound
    coarse = traffic.totals(rig.router)[21].buckets
    for index, bound in enumerate(traffic.PROMETHEUS_BUCKETS_MS):
        fine_upto = sum(
            count
            for count, upper in zip(summary.latency_buckets, traffic.FINE_BUCKETS_MS, strict=False)
            if upper <= bound
        )
        assert sum(coarse[: index + 1]) == fine_upto, bound
    # nginx's clock has 1 ms resolution and the client's own time is not the router's
    upper = next(b for b in traffic.FINE_BUCKETS_MS if b >= client_p95)
    lower = max([0, *(b for b in traffic.FINE_BUCKETS_MS if b < client_p95)])
    tolerance = max(0.1 * client_p95, upper - lower + 1)
    assert abs(summary.p95_ms - client_p95) <= tolerance, (summary.p95_ms, client_p95)


def test_a_route_change_keeps_counting(rig: Rig) -> None:
    a, b = rig.ports
    rig.router.set_route(rig.route(31, a))
    for _ in range(5):
        rig.http.get("/200", headers=rig.host(31))
    rig.router.set_route(rig.route(31, b))  # a redeploy: another port
    for _ in range(4):
        rig.http.get("/apps/31/404")
    rig.router.set_route(rig.route(31, None))  # stopped
    rig.http.get("/apps/31/")
    _settle()
    counts = traffic.totals(rig.router)[31].by_status_class
    assert (counts["2xx"], counts["4xx"], counts["5xx"]) == (5, 4, 1)


def test_metrics_off_counts_nothing_and_routes_as_before() -> None:
    with _router(router_metrics=False) as off:
        a, _ = off.ports
        off.router.set_route(off.route(41, a))
        assert off.http.get("/200", headers=off.host(41)).status_code == 200
        assert traffic.totals(off.router) == {}
        assert traffic.last_hour(off.router, 41).enabled is False


def test_a_full_dict_drops_data_never_requests() -> None:
    with _router(router_metrics_mb=1) as small:
        a, _ = small.ports
        ids = range(1, 1501)
        small.router.replace_all([small.route(app_id, a) for app_id in ids])
        statuses = [small.http.get(f"/apps/{app_id}/200").status_code for app_id in ids]
        assert statuses == [200] * len(ids)
        _settle()
        # ~8 keys an app: 12,000 keys do not fit in 1 MiB; what is left is still right
        totals = traffic.totals(small.router)
        assert 0 < len(totals) < len(ids)
        assert all(found.requests == 1 for found in totals.values())
