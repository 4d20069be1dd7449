"""Route switch time of the reload-free router (nginx + Lua), with small and large tables.

Starts the router (`LuaRouter`) on free loopback ports under a temp DATA_DIR, and a second
nginx as the "apps": two ports answering "blue" and "green" from memory. No Docker. Measures:

1. switch: one `set_route` moving an app from blue's port to green's (and back) until the very
   next request through the router with the app's Host gets the new answer; with 10, 1,000 and
   10,000 routes in the table (p50 / p99 / max; goal p99 <= 10 ms, flat in the table size);
2. fill: 10,000 routes set one `set_route` call at a time (journal compactions included);
3. no reload: nginx's master and worker PIDs before and after 100 route changes;
4. restore: SIGKILL of nginx's master and workers with 10,000 routes, then `ensure_running()`
   until the app answers again (routes come back from the snapshot, nobody pushes them);
5. throughput (if `wrk` is installed): wrk through the router by Host and by path, next to the
   honest floor, a static `proxy_pass` nginx with the same headers and keepalive, and to the
   app directly (goal: router >= 0.8x the static proxy).

Every request goes to 127.0.0.1. Prints a table; exits 0 whatever the numbers.

Usage: .venv/bin/python bench/router_switch.py [--switches 300] [--sizes 10,1000,10000]
       [--duration 5] [--rounds 1] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from minipaas.config import Settings  # noqa: E402
from minipaas.router.dynamic_render import PROXY_HEADERS  # noqa: E402
from minipaas.router.lua_router import LuaRouter, Route, RouteKind  # noqa: E402

SWITCH_GOAL_MS = 10.0
THROUGHPUT_GOAL = 0.8  # router RPS over a static proxy_pass's


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@contextmanager
def plain_nginx(directory: Path, workers: str, http_body: str) -> Iterator[None]:
    """A throw-away nginx (no Lua) with `http_body` inside its http block."""
    (directory / "logs").mkdir(parents=True)
    (directory / "tmp").mkdir()
    conf = directory / "nginx.conf"
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {directory}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""{user}worker_processes {workers};
pid {directory}/nginx.pid;
error_log {directory}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
{temp}{http_body}
}}
"""
    )
    command = ["nginx", "-p", str(directory), "-c", str(conf)]
    subprocess.run(command, check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*command, "-s", "quit"], check=False, capture_output=True)


@contextmanager
def app_servers(directory: Path) -> Iterator[tuple[int, int]]:
    """The "apps": one nginx worker answering "blue" on one port, "green" on another."""
    blue, green = free_port(), free_port()
    body = f"""    access_log off;
    server {{ listen 127.0.0.1:{blue}; location / {{ return 200 "blue"; }} }}
    server {{ listen 127.0.0.1:{green}; location / {{ return 200 "green"; }} }}"""
    with plain_nginx(directory, "1", body):
        yield blue, green


@contextmanager
def static_proxy(directory: Path, target: int, log_dir: Path) -> Iterator[int]:
    """The floor: what the old router rendered for one app, a fixed upstream with keepalive."""
    port = free_port()
    body = f"""    access_log {log_dir}/static-access.log combined buffer=64k flush=1s;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream app {{ server 127.0.0.1:{target}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
{PROXY_HEADERS}        }}
    }}"""
    with plain_nginx(directory, "auto", body):
        yield port


class Client:
    """One keep-alive connection to the router, as a browser would hold."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def get(self, host: str) -> str:
        for attempt in range(2):
            try:
                self.connection.request("GET", "/", headers={"Host": host})
                return self.connection.getresponse().read().decode()
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def route(router: LuaRouter, app_id: int, port: int | None) -> Route:
    kind = RouteKind.PROXY if port else RouteKind.STOPPED
    return router.route(app_id=app_id, app_name=f"app{app_id}", kind=kind, port=port)


def table(router: LuaRouter, size: int, ports: tuple[int, int]) -> list[Route]:
    # Mostly proxies, some stopped apps, a few custom domains: like a real table
    routes = []
    for app_id in range(1, size + 1):
        port = None if app_id % 10 == 0 else ports[app_id % 2]
        domains = (f"www.shop{app_id}.example.test",) if app_id % 7 == 0 else ()
        kind = RouteKind.PROXY if port else RouteKind.STOPPED
        routes.append(
            router.route(
                app_id=app_id, app_name=f"app{app_id}", kind=kind, port=port, domains=domains
            )
        )
    return routes


def measure_switches(
    router: LuaRouter, client: Client, app_id: int, ports: tuple[int, int], count: int
) -> tuple[list[float], list[float]]:
    """(switch ms: set_route until the next request answers anew, set_route ms alone)."""
    host = f"app{app_id}.{router.settings.apps_domain}"
    names = {ports[0]: "blue", ports[1]: "green"}
    switch, set_only = [], []
    for i in range(count + 10):
        port = ports[i % 2]
        started = time.perf_counter()
        router.set_route(route(router, app_id, port))
        after_set = time.perf_counter()
        polls = 0
        while client.get(host) != names[port]:
            polls += 1
            if polls > 10_000:
                raise RuntimeError("the switched route never answered")
        done = time.perf_counter()
        if i >= 10:  # warm-up
            switch.append((done - started) * 1000)
            set_only.append((after_set - started) * 1000)
    return switch, set_only


def row(label: str, values: list[float]) -> str:
    return (
        f"  {label:<34} p50 {percentile(values, 0.5):7.3f} ms   "
        f"p99 {percentile(values, 0.99):7.3f} ms   max {max(values):7.3f} ms   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=300, help="switches per table size")
    parser.add_argument("--sizes", default="10,1000,10000", help="route table sizes")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=1, help="wrk runs per target (median)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="mpb-"))  # short: the control socket path
    try:
        with app_servers(workdir / "apps") as ports:
            settings = Settings(
                data_dir=workdir / "data",
                router_host="127.0.0.1",
                router_port=free_port(),
                router_tls_port=0,  # no HTTPS here (the environment may name a port)
                app_port=free_port(),
                _env_file=None,
            )
            router = LuaRouter(settings)
            router.ensure_running()
            try:
                run(router, settings, ports, sizes, args.switches)
                if args.skip_throughput or shutil.which("wrk") is None:
                    print("\nThroughput: skipped (--skip-throughput, or no wrk installed)")
                else:
                    throughput(router, workdir, ports[0], args.duration, args.rounds)
            finally:
                router.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(
    router: LuaRouter, settings: Settings, ports: tuple[int, int], sizes: list[int], n: int
) -> None:
    client = Client(settings.router_port)
    print(f"nginx {nginx_version()}, {os.cpu_count()} CPUs; every request to 127.0.0.1\n")
    print("Switch: set_route until the next request through nginx gets the new port")
    worst_p99 = 0.0
    for size in sizes:
        started = time.perf_counter()
        router.replace_all(table(router, size, ports))
        replace_ms = (time.perf_counter() - started) * 1000
        switch, set_only = measure_switches(router, client, max(1, size // 2), ports, n)
        worst_p99 = max(worst_p99, percentile(switch, 0.99))
        print(f" {size:>6} routes (replace_all of the table: {replace_ms:.0f} ms)")
        print(row("set_route + first request", switch))
        print(row("set_route alone", set_only))
    verdict = "met" if worst_p99 <= SWITCH_GOAL_MS else "NOT met"
    print(f" goal p99 <= {SWITCH_GOAL_MS:.0f} ms at every size: {verdict} (worst {worst_p99:.3f})")

    size = max(sizes)
    router.replace_all([])
    each = []
    started = time.perf_counter()
    for one in table(router, size, ports):
        before = time.perf_counter()
        router.set_route(one)
        each.append((time.perf_counter() - before) * 1000)
    total = time.perf_counter() - started
    print(f"\nFill: {size} routes, one set_route each: {total:.2f} s")
    print(row("set_route (compactions included)", each))

    master, workers = router.pid(), router.worker_pids()
    for i in range(100):
        router.set_route(route(router, 1, ports[i % 2]))
    same = router.pid() == master and router.worker_pids() == workers
    print(
        f"\nNo reload: master {master}, workers {sorted(workers)} after 100 route changes: "
        f"{'unchanged' if same else 'CHANGED'}"
    )

    probe = f"app{size // 2 + 1}.{settings.apps_domain}"
    expected = client.get(probe)
    for pid in (master, *workers):
        if pid:
            os.kill(pid, signal.SIGKILL)
    while router.pid() is not None:
        time.sleep(0.01)
    started = time.perf_counter()
    router.ensure_running()
    started_ms = (time.perf_counter() - started) * 1000
    client = Client(settings.router_port)
    while client.get(probe) != expected:
        time.sleep(0.001)
    restored_ms = (time.perf_counter() - started) * 1000
    live = len(router.live_table())
    print(
        f"\nRestore after SIGKILL of master and workers ({size} routes in the snapshot): "
        f"ensure_running {started_ms:.0f} ms, app answering {restored_ms:.0f} ms after the "
        f"start began; {live} routes live"
    )


def throughput(router: LuaRouter, workdir: Path, app_port: int, duration: int, rounds: int) -> None:
    settings = router.settings
    router.replace_all([route(router, 1, app_port)])
    host = f"app1.{settings.apps_domain}"
    with static_proxy(workdir / "static", app_port, settings.log_dir) as static_port:
        targets = {
            "app directly": (f"http://127.0.0.1:{app_port}/", None),
            "static proxy_pass (floor)": (f"http://127.0.0.1:{static_port}/", None),
            "router, by Host": (f"{settings.router_probe_url}/", host),
            "router, by path /apps/1/": (f"{settings.router_probe_url}/apps/1/", None),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for _ in range(rounds):
            for name, (url, host_header) in targets.items():  # alternate: noise hits all
                results[name].append(wrk(url, host_header, duration))
    print(f"\nThroughput: wrk -t1 -c16 -d{duration}s, keep-alive, median of {rounds} run(s)")
    floor = statistics.median(rps for rps, _ in results["static proxy_pass (floor)"])
    for name, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        latency = statistics.median(lat for _, lat in runs)
        print(f"  {name:<28} {rps:>9.0f} req/s  {rps / floor:5.2f}x floor   avg {latency:.3f} ms")
    worst = min(
        statistics.median(r for r, _ in results[name])
        for name in ("router, by Host", "router, by path /apps/1/")
    )
    verdict = "met" if worst / floor >= THROUGHPUT_GOAL else "NOT met"
    print(f" goal router >= {THROUGHPUT_GOAL}x the static proxy: {verdict} ({worst / floor:.2f}x)")


def wrk(url: str, host: str | None, duration: int) -> tuple[float, float]:
    """(requests/s, average latency in ms) of one wrk run."""
    command = ["wrk", "-t1", "-c16", f"-d{duration}s", url]
    if host:
        command[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    latency = re.search(r"Latency\s+([0-9.]+)(us|ms|s)\b", out)
    if not rps or not latency:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[latency.group(2)]
    return float(rps.group(1)), float(latency.group(1)) * scale


def nginx_version() -> str:
    result = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return result.stderr.strip().rsplit("/", 1)[-1]


if __name__ == "__main__":
    main()
