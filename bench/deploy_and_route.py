"""Deploy latency and router throughput of mini-paas, each next to its floor.

Starts a throw-away platform (the same one the end-to-end tests use: PostgreSQL, Redis,
nginx, API and worker on free loopback ports under a temp DATA_DIR), then measures:

1. deploy latency: POST /apps/{id}/deploy until the app answers 200 through the router,
   next to `docker run -d -p 127.0.0.1::80 --init <image>` until its published port answers 200;
2. router throughput: wrk through the router (/apps/{id}/) next to wrk straight at the
   container's published port.

Every request goes to 127.0.0.1. Not a pass/fail test: it prints whether the product's goals
were met and exits 0 (CI machines are noisy); it fails only if the platform cannot run.

Usage: .venv/bin/python bench/deploy_and_route.py [--repeats 5] [--duration 5] ...
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402
from tests.support.images import HELLO_V1  # noqa: E402
from tests.support.stack import Stack, running_stack  # noqa: E402

DEPLOY_GOAL = 1.5  # platform deploy within 1.5x of a bare `docker run`
ROUTER_GOAL = 0.8  # router at least 0.8x the RPS of hitting the container directly
BENCH_LABEL = "io.minipaas.bench"


# --- small helpers -------------------------------------------------------------------------


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """One GET on a fresh connection to 127.0.0.1:port; None when nothing answers HTTP."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "minipaas-bench"})
        response = connection.getresponse()
        response.read()
        return int(response.status)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def wait_for_200(port: int, path: str, *, interval: float, timeout: float) -> float:
    """Polls until 127.0.0.1:port answers 200; returns time.monotonic() of that answer."""
    deadline = time.monotonic() + timeout
    while True:
        if http_status(port, path) == 200:
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"127.0.0.1:{port}{path} did not answer 200 within {timeout} s")
        time.sleep(interval)


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.2f} ms"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


# --- deploy latency ------------------------------------------------------------------------


@dataclass
class DeploySample:
    seconds: float
    queued: float | None = None  # deployment created -> worker started it
    worker: float | None = None  # worker started -> deployment finished


class Platform:
    """Creates, deploys and deletes apps through the API of a running stack."""

    def __init__(self, stack: Stack, api: httpx.Client, image: str) -> None:
        self.stack = stack
        self.api = api
        self.image = image
        self.router_port = stack.settings.router_port
        self.apps: list[int] = []

    def create(self) -> int:
        name = f"bench-{secrets.token_hex(4)}"
        response = self.api.post(
            "/apps", json={"name": name, "image": self.image, "internal_port": 80}
        )
        response.raise_for_status()
        app_id = int(response.json()["id"])
        self.apps.append(app_id)
        return app_id

    def deploy(self, app_id: int, *, interval: float, timeout: float) -> DeploySample:
        """POST deploy, then poll the router until the app answers 200 through it."""
        start = time.monotonic()
        response = self.api.post(f"/apps/{app_id}/deploy")
        if response.status_code != 202:
            raise RuntimeError(f"deploy of app {app_id} refused: {response.text}")
        deployment_id = int(response.json()["id"])
        try:
            answered = wait_for_200(
                self.router_port, f"/apps/{app_id}/", interval=interval, timeout=timeout
            )
        except TimeoutError:
            body = self.api.get(f"/apps/{app_id}/deployments/{deployment_id}").json()
            raise RuntimeError(
                f"app {app_id} never answered through the router; deployment: {body}"
            ) from None
        body = self._finished(app_id, deployment_id, timeout)
        return DeploySample(
            seconds=answered - start,
            queued=seconds_between(body.get("created_at"), body.get("started_at")),
            worker=seconds_between(body.get("started_at"), body.get("finished_at")),
        )

    def _finished(self, app_id: int, deployment_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = dict(self.api.get(f"/apps/{app_id}/deployments/{deployment_id}").json())
            if body["status"] in ("succeeded", "failed") or time.monotonic() >= deadline:
                if body["status"] != "succeeded":
                    raise RuntimeError(f"deployment {deployment_id} ended as: {body}")
                return body
            time.sleep(0.05)

    def published_port(self, app_id: int) -> int:
        return int(self.api.get(f"/apps/{app_id}").json()["published_port"])

    def delete(self, app_id: int) -> None:
        response = self.api.delete(f"/apps/{app_id}")
        if response.status_code not in (202, 204, 404):
            print(f"  warning: DELETE /apps/{app_id} answered {response.status_code}")
        with contextlib.suppress(ValueError):
            self.apps.remove(app_id)

    def delete_all(self) -> None:
        for app_id in list(self.apps):
            with contextlib.suppress(httpx.HTTPError):
                self.delete(app_id)


class Floor:
    """`docker run -d -p 127.0.0.1::80 --init <image>` through the Docker SDK."""

    def __init__(self, image: str) -> None:
        self.client = docker.from_env(timeout=60)
        self.image = image
        self.run_label = secrets.token_hex(4)

    def run(self, *, interval: float, timeout: float) -> DeploySample:
        start = time.monotonic()
        container = self.client.containers.run(
            self.image,
            detach=True,
            init=True,
            ports={"80/tcp": ("127.0.0.1", None)},
            labels={BENCH_LABEL: self.run_label},
        )
        try:
            container.reload()
            port = int(container.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
            answered = wait_for_200(port, "/", interval=interval, timeout=timeout)
        finally:
            container.remove(force=True)
        return DeploySample(seconds=answered - start)

    def cleanup(self) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"{BENCH_LABEL}={self.run_label}"}
        ):
            with contextlib.suppress(Exception):
                container.remove(force=True)


def measure_deploys(
    platform: Platform, floor: Floor, args: argparse.Namespace
) -> tuple[list[DeploySample], list[DeploySample]]:
    """Alternates platform and floor runs so that machine noise hits both alike."""
    ours: list[DeploySample] = []
    bare: list[DeploySample] = []
    total = args.warmup_deploys + args.repeats
    for index in range(total):
        warmup = index < args.warmup_deploys
        app_id = platform.create()
        sample = platform.deploy(app_id, interval=args.poll_interval, timeout=args.timeout)
        platform.delete(app_id)
        floor_sample = floor.run(interval=args.poll_interval, timeout=args.timeout)
        tag = "warm-up" if warmup else f"run {index - args.warmup_deploys + 1}"
        print(
            f"  {tag:<8} platform {fmt_s(sample.seconds)}   floor {fmt_s(floor_sample.seconds)}",
            flush=True,
        )
        if not warmup:
            ours.append(sample)
            bare.append(floor_sample)
    return ours, bare


# --- router throughput ---------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    requests: int
    p50: float | None  # seconds
    p99: float | None
    non_2xx: int
    socket_errors: int


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    requests = re.search(r"(\d+) requests in", output)
    if rps is None or requests is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, flags=re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(requests.group(1)),
        p50=_duration(percentiles["50"]) if "50" in percentiles else None,
        p99=_duration(percentiles["99"]) if "99" in percentiles else None,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def run_wrk(url: str, *, threads: int, connections: int, seconds: float) -> WrkResult:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "--latency",
        url,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    return parse_wrk(result.stdout)


def merge(results: list[WrkResult]) -> WrkResult:
    """The median round of several (by RPS); errors are summed over all rounds."""
    ordered = sorted(results, key=lambda r: r.rps)
    middle = ordered[(len(ordered) - 1) // 2]
    return WrkResult(
        rps=statistics.median(r.rps for r in results),
        requests=sum(r.requests for r in results),
        p50=middle.p50,
        p99=middle.p99,
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
    )


def time_wait_sockets(ports: set[int]) -> int:
    """TCP sockets in TIME_WAIT (state 06) with a local or remote port among `ports`."""
    count = 0
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table_path) as rows:
            next(rows, None)
            for row in rows:
                fields = row.split(None, 4)
                if len(fields) < 4 or fields[3] != "06":
                    continue
                local, remote = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
                if local in ports or remote in ports:
                    count += 1
    return count


def drain_time_wait(ports: set[int], threshold: int, max_wait: float) -> str:
    """Waits (bounded) until few of our sockets are left in TIME_WAIT; returns what it saw.

    busybox httpd closes every connection, so each request leaves a socket in TIME_WAIT for
    60 s on Docker's proxy -> container hop (172.17.0.1 -> 172.17.0.x:80, which
    tcp_tw_reuse=2 does not cover). Once the ~28k local ports are used up, new connections
    stall and RPS collapses, whichever target is measured then. So every run starts clean.
    Only sockets to or from the router, the published port and the container port count:
    other programs' loopback traffic does not use up those port pairs.
    """
    before = time_wait_sockets(ports)
    started = time.monotonic()
    count = before
    while count > threshold and time.monotonic() - started < max_wait:
        time.sleep(1)
        count = time_wait_sockets(ports)
    waited = time.monotonic() - started
    if before <= threshold:
        return f"{before} sockets in TIME_WAIT"
    return f"waited {waited:.0f} s for TIME_WAIT sockets to drain: {before} -> {count}"


def measure_throughput(
    platform: Platform, args: argparse.Namespace
) -> tuple[WrkResult, WrkResult, str]:
    app_id = platform.create()
    platform.deploy(app_id, interval=args.poll_interval, timeout=args.timeout)
    port = platform.published_port(app_id)
    targets: dict[str, str] = {
        "direct": f"http://127.0.0.1:{port}/",
        "router": f"http://127.0.0.1:{platform.router_port}/apps/{app_id}/",
    }
    for name, url in targets.items():
        body = httpx.get(url, timeout=5)
        if body.status_code != 200:
            raise RuntimeError(f"{name} target {url} answered {body.status_code}")
    wrk = {"threads": args.threads, "connections": args.connections}
    ports = {port, platform.router_port, 80}  # 80: the container's port, behind docker-proxy
    for url in targets.values():
        if args.warmup_seconds > 0:
            run_wrk(url, seconds=args.warmup_seconds, **wrk)
    rounds: dict[str, list[WrkResult]] = {name: [] for name in targets}
    for number in range(1, args.rounds + 1):
        for name, url in targets.items():
            drained = drain_time_wait(ports, args.drain_threshold, args.drain_max_wait)
            result = run_wrk(url, seconds=args.duration, **wrk)
            rounds[name].append(result)
            print(
                f"  round {number} {name:<6} {result.rps:>7.0f} req/s  "
                f"p50 {fmt_ms(result.p50)}  p99 {fmt_ms(result.p99)}  ({drained})",
                flush=True,
            )
    platform.delete(app_id)
    described = (
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, "
        f"{args.rounds} round(s) per target, each run starting with <= {args.drain_threshold} "
        f"sockets in TIME_WAIT"
    )
    if args.warmup_seconds > 0:
        described += f", after a {args.warmup_seconds:g} s warm-up per target"
    return merge(rounds["router"]), merge(rounds["direct"]), described


# --- report --------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
        if index == 0:
            lines.append("  " + "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("MET" if met else "NOT MET")


def describe_host(stack: Stack) -> str:
    def version(command: list[str], pattern: str) -> str:
        if shutil.which(command[0]) is None:
            return f"{command[0]} missing"
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        found = re.search(pattern, done.stdout + done.stderr)
        return f"{command[0]} {found.group(1) if found else '?'}"

    conf = (stack.settings.nginx_dir / "nginx.conf").read_text()
    workers = re.search(r"worker_processes\s+([^;]+);", conf)
    access_log = re.search(r"access_log\s+([^;]+);", conf)
    if access_log is None:
        logging = "default access_log"
    elif access_log.group(1).strip() == "off":
        logging = "access_log off"
    else:
        buffered = "buffer=" in access_log.group(1)
        logging = f"access_log on, {'buffered' if buffered else 'one write per request'}"
    nginx = version(["nginx", "-v"], r"nginx/(\S+)")
    wrk = version(["wrk", "-v"], r"wrk (\S+)")
    return (
        f"host: {os.cpu_count()} CPUs; docker {docker.from_env().version().get('Version')}; "
        f"{nginx}; {wrk}\n"
        f"router: nginx worker_processes {workers.group(1) if workers else '?'}, {logging}"
    )


def api_headers(stack: Stack) -> dict[str, str]:
    """A bearer token when the platform has one (ADMIN_TOKEN, or DATA_DIR/admin-token)."""
    token = stack.env.get("ADMIN_TOKEN") or os.environ.get("ADMIN_TOKEN")
    token_file = stack.settings.data_dir / "admin-token"
    if not token and token_file.exists():
        token = token_file.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def print_logs(stack: Stack, lines: int = 30) -> None:
    for name in ("api.log", "worker.log", "nginx-error.log"):
        path = stack.settings.log_dir / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            print(f"--- last lines of {name} ---", *tail, sep="\n", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5, help="measured deploys of each kind")
    parser.add_argument(
        "--warmup-deploys", type=int, default=1, help="unmeasured deploys of each kind first"
    )
    parser.add_argument("--image", default=HELLO_V1, help="a local image serving HTTP on :80")
    parser.add_argument("--poll-interval", type=float, default=0.01, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on one deploy after")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=1, help="wrk runs per target")
    parser.add_argument("--warmup-seconds", type=float, default=0.0, help="wrk warm-up per target")
    parser.add_argument(
        "--drain-threshold",
        type=int,
        default=1000,
        help="before each wrk run, wait until at most this many sockets are in TIME_WAIT",
    )
    parser.add_argument(
        "--drain-max-wait", type=float, default=75.0, help="but wait at most this many seconds"
    )
    parser.add_argument("--skip-throughput", action="store_true", help="deploy latency only")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1:
        parser.error("--repeats and --rounds must be at least 1")

    have_wrk = shutil.which("wrk") is not None
    if not have_wrk and not args.skip_throughput:
        print("wrk is not installed (apt-get install -y wrk): router throughput is skipped")

    print("mini-paas benchmark: deploy latency and router throughput (all traffic to 127.0.0.1)")
    print("starting a throw-away platform ...", flush=True)
    started = time.monotonic()
    floor = Floor(args.image)
    with (
        running_stack(prefix="minipaas-bench-") as stack,
        httpx.Client(base_url=stack.api_url, headers=api_headers(stack), timeout=60) as api,
    ):
        print(
            f"platform ready in {time.monotonic() - started:.1f} s: API {stack.api_url}, "
            f"router {stack.router_url}"
        )
        print(describe_host(stack))
        print(f"image: {args.image}")
        platform = Platform(stack, api, args.image)
        try:
            print(
                f"\n[1] deploy latency: {args.warmup_deploys} warm-up + {args.repeats} measured, "
                f"polling every {args.poll_interval * 1000:.0f} ms on fresh connections"
            )
            print("    platform: create app, then POST /apps/{id}/deploy -> 200 via the router")
            print(
                "    floor:    docker run -d -p 127.0.0.1::80 --init IMAGE (Docker SDK) "
                "-> 200 on its port"
            )
            ours, bare = measure_deploys(platform, floor, args)
            router: WrkResult | None = None
            direct: WrkResult | None = None
            if have_wrk and not args.skip_throughput:
                print(
                    "\n[2] router throughput: same load through the router and straight at "
                    "the container's published port"
                )
                router, direct, wrk_described = measure_throughput(platform, args)
                print(f"    {wrk_described}")
        except Exception:
            print_logs(stack)  # the DATA_DIR with the logs is deleted on the way out
            raise
        finally:
            platform.delete_all()
            floor.cleanup()

    ours_s = [s.seconds for s in ours]
    bare_s = [s.seconds for s in bare]
    queued = [s.queued for s in ours if s.queued is not None]
    worker = [s.worker for s in ours if s.worker is not None]
    deploy_ratio = ratio(statistics.median(ours_s), statistics.median(bare_s))
    deploy_min_ratio = ratio(min(ours_s), min(bare_s))

    print("\nResults")
    rows = [
        ["deploy latency", "platform", "floor", "platform/floor"],
        [
            "median",
            fmt_s(statistics.median(ours_s)),
            fmt_s(statistics.median(bare_s)),
            fmt_ratio(deploy_ratio),
        ],
        ["min", fmt_s(min(ours_s)), fmt_s(min(bare_s)), fmt_ratio(deploy_min_ratio)],
        ["max", fmt_s(max(ours_s)), fmt_s(max(bare_s)), ""],
    ]
    print(table(rows))
    if queued and worker:
        print(
            f"  platform breakdown (medians, from the deployment's timestamps): queued -> worker "
            f"start {fmt_s(statistics.median(queued))}, worker start -> finished "
            f"{fmt_s(statistics.median(worker))}"
        )

    router_ratio: float | None = None
    if router is not None and direct is not None:
        router_ratio = ratio(router.rps, direct.rps)
        print()
        rows = [
            ["router throughput", "router", "direct", "router/direct"],
            ["requests/s", f"{router.rps:.0f}", f"{direct.rps:.0f}", fmt_ratio(router_ratio)],
            ["latency p50", fmt_ms(router.p50), fmt_ms(direct.p50), ""],
            ["latency p99", fmt_ms(router.p99), fmt_ms(direct.p99), ""],
            ["non-2xx answers", str(router.non_2xx), str(direct.non_2xx), ""],
            ["socket errors", str(router.socket_errors), str(direct.socket_errors), ""],
        ]
        print(table(rows))

    deploy_met = deploy_ratio is not None and deploy_ratio <= DEPLOY_GOAL
    router_met = None if router_ratio is None else router_ratio >= ROUTER_GOAL
    print(
        f"\ngoal deploy <= {DEPLOY_GOAL}x floor (median): {verdict(deploy_met)}; "
        f"goal router >= {ROUTER_GOAL}x direct (requests/s): {verdict(router_met)}"
    )
    print(
        f"RESULT deploy platform/floor {fmt_ratio(deploy_ratio)} (median), "
        f"{fmt_ratio(deploy_min_ratio)} (min); router/direct {fmt_ratio(router_ratio)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
