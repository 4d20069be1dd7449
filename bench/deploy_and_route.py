"""Deploy latency and router throughput of mini-paas, each next to its floor.

Starts a throw-away platform (the same one the end-to-end tests use: PostgreSQL, Redis,
nginx, API and worker on free loopback ports under a temp DATA_DIR), then measures:

1. deploy latency: POST /apps/{id}/deploy until the app answers 200 through the router on its
   host route (`Host: <name>.<APPS_DOMAIN>`), and on its path route (/apps/{id}/), next to
   `docker run -d -p 127.0.0.1::80 --init <image>` until its published port answers 200;
2. router throughput with keep-alive connections (wrk -t1 -c16) to an app that keeps them open
   (the host's own nginx binary in a FROM scratch image, answering 200 from memory, deployed
   through the platform): straight at the container's published port, through a static nginx
   `proxy_pass` with upstream keepalive to that same port (the floor of any proxy hop), and
   through the router by Host (and by path); plus p50 latency with one connection, so the
   latency the router adds per request shows without queueing.

Every request goes to 127.0.0.1. Not a pass/fail test: it prints whether the product's goals
were met and exits 0 (CI machines are noisy); it fails only if the platform cannot run.

Usage: .venv/bin/python bench/deploy_and_route.py [--repeats 5] [--duration 5] [--rounds 3] ...
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402
from bench.router_switch import static_proxy  # noqa: E402
from tests.support import stack as test_stack  # noqa: E402
from tests.support.images import HELLO_V1  # noqa: E402
from tests.support.stack import Stack, running_stack  # noqa: E402

from minipaas.runtime.docker_runtime import default_bridge_isolated  # noqa: E402

DEPLOY_GOAL = 1.2  # platform deploy (host route answering) within 1.2x of a bare `docker run`
DIRECT_GOAL = 0.9  # router by host at least 0.9x the RPS of hitting the container directly
PROXY_GOAL = 0.8  # router by host at least 0.8x the RPS of a static proxy_pass to the same port
BENCH_LABEL = "io.minipaas.bench"
# The deployment events that mark the steps between the POST and the first 200
STEP_EVENTS = {
    "queued": "queued",
    "image": "image here",
    "container": "container started",
    "healthy": "healthy",
    "route": "route switched",
}
KEEPALIVE_IMAGE = "minipaas-bench/keepalive-nginx:latest"


# --- small helpers -------------------------------------------------------------------------


def http_status(port: int, path: str, host: str | None = None, timeout: float = 1.0) -> int | None:
    """One GET on a fresh connection to 127.0.0.1:port; None when nothing answers HTTP."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"User-Agent": "minipaas-bench"}
    if host is not None:
        headers["Host"] = host
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def wait_for_200(
    port: int, probes: dict[str, tuple[str, str | None]], *, interval: float, timeout: float
) -> dict[str, float]:
    """Polls each probe (name -> (path, Host)) on 127.0.0.1:port, in order, until each has
    answered 200; returns time.monotonic() of each one's first 200."""
    deadline = time.monotonic() + timeout
    answered: dict[str, float] = {}
    while True:
        for name, (path, host) in probes.items():
            if name not in answered and http_status(port, path, host) == 200:
                answered[name] = time.monotonic()
        if len(answered) == len(probes):
            return answered
        if time.monotonic() >= deadline:
            missing = sorted(set(probes) - set(answered))
            raise TimeoutError(f"127.0.0.1:{port} {missing} did not answer 200 within {timeout} s")
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
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.3f} ms"


def fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e6:+.0f} us"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


# --- deploy latency ------------------------------------------------------------------------


@dataclass
class DeploySample:
    seconds: float  # until the first 200 on the host route (or the floor's port)
    path_seconds: float | None = None  # until the first 200 on the path route
    queued: float | None = None  # deployment created -> worker started it
    worker: float | None = None  # worker started -> deployment finished
    # seconds after the POST at which each step was recorded (the deployment's timestamps)
    steps: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchApp:
    id: int
    name: str


class Platform:
    """Creates, deploys and deletes apps through the API of a running stack."""

    def __init__(self, stack: Stack, api: httpx.Client, image: str) -> None:
        self.stack = stack
        self.api = api
        self.image = image
        self.router_port = stack.settings.router_port
        self.apps: list[int] = []

    def host(self, app: BenchApp) -> str:
        return f"{app.name}.{self.stack.settings.apps_domain}"

    def create(self, image: str | None = None, **extra: Any) -> BenchApp:
        name = f"bench-{secrets.token_hex(4)}"
        body = {"name": name, "image": image or self.image, "internal_port": 80, **extra}
        response = self.api.post("/apps", json=body)
        response.raise_for_status()
        app = BenchApp(id=int(response.json()["id"]), name=name)
        self.apps.append(app.id)
        return app

    def deploy(self, app: BenchApp, *, interval: float, timeout: float) -> DeploySample:
        """POST deploy, then poll the router until the app answers 200 by host and by path."""
        start, wall_start = time.monotonic(), time.time()
        response = self.api.post(f"/apps/{app.id}/deploy")
        if response.status_code != 202:
            raise RuntimeError(f"deploy of app {app.id} refused: {response.text}")
        deployment_id = int(response.json()["id"])
        probes = {"host": ("/", self.host(app)), "path": (f"/apps/{app.id}/", None)}
        try:
            answered = wait_for_200(self.router_port, probes, interval=interval, timeout=timeout)
        except TimeoutError as exc:
            body = self.api.get(f"/apps/{app.id}/deployments/{deployment_id}").json()
            raise RuntimeError(f"app {app.id}: {exc}; deployment: {body}") from None
        body = self._finished(app.id, deployment_id, timeout)
        return DeploySample(
            seconds=answered["host"] - start,
            path_seconds=answered["path"] - start,
            queued=seconds_between(body.get("created_at"), body.get("started_at")),
            worker=seconds_between(body.get("started_at"), body.get("finished_at")),
            steps=self._steps(app.id, deployment_id, body, wall_start),
        )

    def _steps(
        self, app_id: int, deployment_id: int, body: dict[str, Any], wall_start: float
    ) -> dict[str, float]:
        """When the API, the worker and the router reached each step, after the POST (the
        database's clock is this host's)."""
        events = self.api.get(f"/apps/{app_id}/deployments/{deployment_id}/events").json()
        stamps = {"recorded": body.get("created_at"), "worker start": body.get("started_at")}
        for event in events:
            if event["kind"] in STEP_EVENTS:
                stamps.setdefault(STEP_EVENTS[event["kind"]], event["at"])
        return {
            name: datetime.fromisoformat(at).timestamp() - wall_start
            for name, at in stamps.items()
            if at
        }

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
    """`docker run -d -p 127.0.0.1::80 --init <image>` through the Docker SDK; with
    `isolated`, on a network of its own where containers cannot reach each other, as the
    platform's apps network (Docker's start costs more on a user-defined network)."""

    def __init__(self, image: str, *, isolated: bool = False) -> None:
        self.client = docker.from_env(timeout=60)
        self.image = image
        self.run_label = secrets.token_hex(4)
        self.network: str | None = None
        if isolated:
            self.network = f"minipaas-bench-{self.run_label}"
            self.client.networks.create(
                self.network,
                driver="bridge",
                options={"com.docker.network.bridge.enable_icc": "false"},
                labels={BENCH_LABEL: self.run_label},
            )

    def run(self, *, interval: float, timeout: float) -> DeploySample:
        start = time.monotonic()
        extra = {"network": self.network} if self.network else {}
        container = self.client.containers.run(
            self.image,
            detach=True,
            init=True,
            ports={"80/tcp": ("127.0.0.1", None)},
            labels={BENCH_LABEL: self.run_label},
            **extra,
        )
        try:
            container.reload()
            port = int(container.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
            answered = wait_for_200(port, {"/": ("/", None)}, interval=interval, timeout=timeout)
        finally:
            container.remove(force=True)
        return DeploySample(seconds=answered["/"] - start)

    def cleanup(self) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"{BENCH_LABEL}={self.run_label}"}
        ):
            with contextlib.suppress(Exception):
                container.remove(force=True)
        if self.network:
            with contextlib.suppress(Exception):
                self.client.networks.get(self.network).remove()


def measure_deploys(
    platform: Platform, floor: Floor, isolated: Floor, args: argparse.Namespace
) -> tuple[list[DeploySample], list[DeploySample], list[DeploySample]]:
    """Alternates platform and floor runs so that machine noise hits both alike."""
    ours: list[DeploySample] = []
    bare: list[DeploySample] = []
    bare_isolated: list[DeploySample] = []
    total = args.warmup_deploys + args.repeats
    for index in range(total):
        warmup = index < args.warmup_deploys
        app = platform.create()
        sample = platform.deploy(app, interval=args.poll_interval, timeout=args.timeout)
        platform.delete(app.id)
        floor_sample = floor.run(interval=args.poll_interval, timeout=args.timeout)
        isolated_sample = isolated.run(interval=args.poll_interval, timeout=args.timeout)
        tag = "warm-up" if warmup else f"run {index - args.warmup_deploys + 1}"
        print(
            f"  {tag:<8} platform by host {fmt_s(sample.seconds)}, by path "
            f"{fmt_s(sample.path_seconds)}   floor {fmt_s(floor_sample.seconds)}, "
            f"isolated network {fmt_s(isolated_sample.seconds)}",
            flush=True,
        )
        if not warmup:
            ours.append(sample)
            bare.append(floor_sample)
            bare_isolated.append(isolated_sample)
    return ours, bare, bare_isolated


# --- the keep-alive app --------------------------------------------------------------------

KEEPALIVE_CONF = """\
user nobody nogroup;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 80;
        location / {
            default_type text/plain;
            return 200 "ok\\n";
        }
    }
}
"""
KEEPALIVE_DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
ENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
CMD ["/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/nginx/nginx.conf", "-g", "daemon off;"]
"""


def nginx_files(nginx: str) -> list[str]:
    """The nginx binary, the shared libraries ldd lists for it and the dynamic loader."""
    listed = subprocess.run(["ldd", nginx], capture_output=True, text=True, check=True).stdout
    files = [nginx]
    for line in listed.splitlines():
        found = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if found:
            files.append(found.group(1))
    return files


def build_keepalive_image(client: docker.DockerClient) -> str:
    """FROM scratch: the host's nginx and its libraries, answering 200 "ok" on :80 with
    keep-alive (busybox httpd closes every connection). Runs as root, workers as nobody."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))

        add("Dockerfile", KEEPALIVE_DOCKERFILE.encode())
        for path in nginx_files(nginx):
            target = "/usr/sbin/nginx" if path == nginx else path
            add(f"rootfs{target}", Path(path).read_bytes(), 0o755)  # read through symlinks
        add("rootfs/etc/nginx/nginx.conf", KEEPALIVE_CONF.encode())
        add("rootfs/etc/passwd", b"root:x:0:0::/:/nologin\nnobody:x:65534:65534::/:/nologin\n")
        add("rootfs/etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        tmp = tarfile.TarInfo("rootfs/tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        archive.addfile(tmp)
    context.seek(0)
    client.images.build(
        fileobj=context,
        custom_context=True,
        tag=KEEPALIVE_IMAGE,
        rm=True,
        forcerm=True,
        labels={BENCH_LABEL: "keepalive"},
    )
    return KEEPALIVE_IMAGE


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


def run_wrk(
    url: str, host: str | None, *, threads: int, connections: int, seconds: float
) -> WrkResult:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if host is not None:
        command += ["-H", f"Host: {host}"]
    command += ["--timeout", "5s", url]
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


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    host: str | None = None


@dataclass
class TargetResult:
    target: Target
    loaded: WrkResult  # -t1 -cN: throughput
    single: WrkResult | None  # -t1 -c1: latency without queueing


DIRECT, STATIC, BY_HOST, BY_PATH = "direct", "static proxy_pass", "router by host", "router by path"


@contextlib.contextmanager
def throughput_targets(
    platform: Platform, args: argparse.Namespace, workdir: Path
) -> Iterator[list[Target]]:
    """The keep-alive app deployed through the platform, and the four ways to reach it."""
    client = docker.from_env(timeout=120)
    image = build_keepalive_image(client)
    cpus = platform.stack.settings.max_cpus  # the platform's default (0.5) would cap the app
    app = platform.create(image, cpus=cpus)
    platform.deploy(app, interval=args.poll_interval, timeout=args.timeout)
    port = platform.published_port(app.id)
    router = f"http://127.0.0.1:{platform.router_port}"
    try:
        with static_proxy(workdir / "static", port, workdir) as static_port:
            targets = [
                Target(DIRECT, f"http://127.0.0.1:{port}/"),
                Target(STATIC, f"http://127.0.0.1:{static_port}/"),
                Target(BY_HOST, f"{router}/", platform.host(app)),
                Target(BY_PATH, f"{router}/apps/{app.id}/"),
            ]
            for target in targets:
                headers = {"Host": target.host} if target.host else {}
                answer = httpx.get(target.url, headers=headers, timeout=5)
                if answer.status_code != 200 or answer.text != "ok\n":
                    raise RuntimeError(f"{target.name} {target.url} answered {answer.status_code}")
            print(
                f"    app: {image} (the host's nginx, FROM scratch, 1 worker, keep-alive), "
                f"--cpus {cpus:g}, published on 127.0.0.1:{port}"
            )
            yield targets
    finally:
        platform.delete(app.id)
        with contextlib.suppress(Exception):
            client.images.remove(image, force=True)


def measure_throughput(
    platform: Platform, args: argparse.Namespace, workdir: Path
) -> dict[str, TargetResult]:
    with throughput_targets(platform, args, workdir) as targets:
        loaded = {"threads": 1, "connections": args.connections}
        for target in targets:  # warm every path up (connections, caches, CPU frequency)
            run_wrk(target.url, target.host, seconds=args.warmup_seconds, **loaded)
        rounds: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
        singles: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
        for number in range(1, args.rounds + 1):
            for target in targets:  # alternate, so that noise hits every target alike
                result = run_wrk(target.url, target.host, seconds=args.duration, **loaded)
                rounds[target.name].append(result)
                single = None
                if args.latency_seconds > 0:
                    single = run_wrk(
                        target.url,
                        target.host,
                        threads=1,
                        connections=1,
                        seconds=args.latency_seconds,
                    )
                    singles[target.name].append(single)
                print(
                    f"  round {number} {target.name:<18} {result.rps:>8.0f} req/s  "
                    f"p50 {fmt_ms(result.p50)}  p99 {fmt_ms(result.p99)}"
                    + (f"   1 connection: p50 {fmt_ms(single.p50)}" if single else ""),
                    flush=True,
                )
        return {
            t.name: TargetResult(
                t, merge(rounds[t.name]), merge(singles[t.name]) if singles[t.name] else None
            )
            for t in targets
        }


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

    conf_dir = stack.settings.nginx_dir
    conf_file = next(
        (conf_dir / name for name in ("router.conf", "nginx.conf") if (conf_dir / name).exists()),
        None,
    )
    conf = conf_file.read_text() if conf_file else ""
    workers = re.search(r"worker_processes\s+([^;]+);", conf)
    access_log = re.search(r"^\s*access_log\s+([^;]+);", conf, flags=re.MULTILINE)
    if access_log is None:
        logging = "default access_log"
    elif access_log.group(1).strip() == "off":
        logging = "access_log off"
    else:
        buffered = "buffer=" in access_log.group(1)
        logging = f"access_log on, {'buffered' if buffered else 'one write per request'}"
    nginx = version(["nginx", "-v"], r"nginx/(\S+)")
    wrk = version(["wrk", "-v"], r"wrk (\S+)")
    client = docker.from_env()
    apps_network = (
        "Docker's default bridge (the engine runs with ICC off)"
        if stack.settings.apps_bridge == "auto" and default_bridge_isolated(client.api)
        else f"its own, {stack.settings.apps_network}, ICC off"
    )
    return (
        f"host: {os.cpu_count()} CPUs; docker {client.version().get('Version')}; "
        f"{nginx}; {wrk}\n"
        f"router: nginx worker_processes {workers.group(1) if workers else '?'}, {logging}\n"
        f"apps' network (APPS_BRIDGE={stack.settings.apps_bridge}): {apps_network}"
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


def report_deploys(
    ours: list[DeploySample], bare: list[DeploySample], isolated: list[DeploySample]
) -> float | None:
    ours_s = [s.seconds for s in ours]
    path_s = [s.path_seconds for s in ours if s.path_seconds is not None]
    bare_s = [s.seconds for s in bare]
    isolated_s = [s.seconds for s in isolated]
    queued = [s.queued for s in ours if s.queued is not None]
    worker = [s.worker for s in ours if s.worker is not None]
    deploy_ratio = ratio(statistics.median(ours_s), statistics.median(bare_s))
    rows = [
        ["deploy latency", "by host", "by path", "docker run", "host/floor", "path/floor"],
    ]
    for label, pick in (("median", statistics.median), ("min", min), ("max", max)):
        rows.append(
            [
                label,
                fmt_s(pick(ours_s)),
                fmt_s(pick(path_s)) if path_s else "-",
                fmt_s(pick(bare_s)),
                # max over max says little: a ratio for the median and the best case only
                fmt_ratio(ratio(pick(ours_s), pick(bare_s))) if pick is not max else "",
                fmt_ratio(ratio(pick(path_s), pick(bare_s))) if path_s and pick is not max else "",
            ]
        )
    print(table(rows))
    if queued and worker:
        print(
            f"  platform breakdown (medians, from the deployment's timestamps): queued -> worker "
            f"start {fmt_s(statistics.median(queued))}, worker start -> finished "
            f"{fmt_s(statistics.median(worker))}"
        )
    median_ours, median_isolated = statistics.median(ours_s), statistics.median(isolated_s)
    shown = [
        f"{name} {fmt_s(statistics.median(found))}"
        for name in ["recorded", "worker start", *STEP_EVENTS.values()]
        if (found := [s.steps[name] for s in ours if name in s.steps])
    ]
    print(f"  after the POST (medians): {', '.join(shown)}, first 200 {fmt_s(median_ours)}")
    print(
        "  docker run on a network of its own with ICC off (where the platform runs apps with "
        "APPS_BRIDGE=own, or on an engine that lets its default bridge's containers talk): "
        f"median {fmt_s(median_isolated)}, "
        f"{fmt_ratio(ratio(median_isolated, statistics.median(bare_s)))} the floor; "
        f"the platform by host is {fmt_ratio(ratio(median_ours, median_isolated))} of it"
    )
    return deploy_ratio


def report_throughput(results: dict[str, TargetResult], args: argparse.Namespace) -> list[str]:
    direct, static = results[DIRECT].loaded, results[STATIC].loaded
    rows = [
        [
            f"keep-alive, wrk -t1 -c{args.connections}",
            "req/s",
            "/direct",
            "/static",
            "p50",
            "p99",
            "p50 1 conn",
            "errors",
        ]
    ]
    for name, result in results.items():
        loaded = result.loaded
        rows.append(
            [
                name,
                f"{loaded.rps:.0f}",
                fmt_ratio(ratio(loaded.rps, direct.rps)),
                fmt_ratio(ratio(loaded.rps, static.rps)),
                fmt_ms(loaded.p50),
                fmt_ms(loaded.p99),
                fmt_ms(result.single.p50) if result.single else "-",
                str(loaded.non_2xx + loaded.socket_errors),
            ]
        )
    print(table(rows))

    def added(name: str, over: str) -> str:
        ours, base = results[name], results[over]
        loaded = None
        if ours.loaded.p50 is not None and base.loaded.p50 is not None:
            loaded = ours.loaded.p50 - base.loaded.p50
        single = None
        if ours.single and base.single and ours.single.p50 and base.single.p50:
            single = ours.single.p50 - base.single.p50
        return f"{fmt_us(single)} (1 connection), {fmt_us(loaded)} (at -c{args.connections})"

    print(f"  added latency per request, p50, router by host over direct: {added(BY_HOST, DIRECT)}")
    print(
        f"  added latency per request, p50, router by host over static proxy: "
        f"{added(BY_HOST, STATIC)}"
    )
    print(f"  added latency per request, p50, static proxy over direct: {added(STATIC, DIRECT)}")
    host = results[BY_HOST].loaded.rps
    over_direct, over_static = ratio(host, direct.rps), ratio(host, static.rps)
    return [
        f"goal router by host >= {DIRECT_GOAL}x direct: "
        f"{verdict(over_direct is not None and over_direct >= DIRECT_GOAL)} "
        f"({fmt_ratio(over_direct)})",
        f"goal router by host >= {PROXY_GOAL}x static proxy_pass: "
        f"{verdict(over_static is not None and over_static >= PROXY_GOAL)} "
        f"({fmt_ratio(over_static)})",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5, help="measured deploys of each kind")
    parser.add_argument(
        "--warmup-deploys", type=int, default=1, help="unmeasured deploys of each kind first"
    )
    parser.add_argument("--image", default=HELLO_V1, help="a local image serving HTTP on :80")
    parser.add_argument("--poll-interval", type=float, default=0.01, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on one deploy after")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (-t1)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per target (median)")
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=2.0,
        help="seconds of wrk -c1 per target and round (latency without queueing); 0: skip",
    )
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="wrk warm-up per target")
    parser.add_argument("--skip-throughput", action="store_true", help="deploy latency only")
    parser.add_argument(
        "--reconcile-interval",
        type=float,
        default=15.0,
        help="RECONCILE_INTERVAL_SECONDS (the platform's default; the tests use 1)",
    )
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
    isolated = Floor(args.image, isolated=True)
    workdir = Path(tempfile.mkdtemp(prefix="mpbench-"))
    throughput: dict[str, TargetResult] | None = None
    test_env = test_stack.stack_env

    def bench_env(data_dir: Path) -> dict[str, str]:
        # The tests run the reconciler every second so that repairs show at once; a deploy
        # is measured on the platform as it runs by default
        return {**test_env(data_dir), "RECONCILE_INTERVAL_SECONDS": str(args.reconcile_interval)}

    test_stack.stack_env = bench_env
    try:
        with (
            running_stack(prefix="minipaas-bench-") as stack,
            httpx.Client(base_url=stack.api_url, headers=api_headers(stack), timeout=60) as api,
        ):
            print(
                f"platform ready in {time.monotonic() - started:.1f} s: API {stack.api_url}, "
                f"router {stack.router_url}, apps at <name>.{stack.settings.apps_domain}"
            )
            print(describe_host(stack))
            print(f"image: {args.image}")
            platform = Platform(stack, api, args.image)
            try:
                print(
                    f"\n[1] deploy latency: {args.warmup_deploys} warm-up + {args.repeats} "
                    f"measured, polling every {args.poll_interval * 1000:.0f} ms on fresh "
                    "connections"
                )
                print(
                    "    platform: create app, then POST /apps/{id}/deploy -> 200 via the router "
                    "with Host: <name>.<apps domain> (then /apps/{id}/, polled right after)"
                )
                print(
                    "    floor:    docker run -d -p 127.0.0.1::80 --init IMAGE (Docker SDK) "
                    "-> 200 on its port"
                )
                ours, bare, bare_isolated = measure_deploys(platform, floor, isolated, args)
                if have_wrk and not args.skip_throughput:
                    print(
                        f"\n[2] router throughput, keep-alive: wrk -t1 -c{args.connections} "
                        f"-d{args.duration:g}s --latency and wrk -t1 -c1 "
                        f"-d{args.latency_seconds:g}s per target, {args.rounds} round(s), "
                        "targets alternating"
                    )
                    throughput = measure_throughput(platform, args, workdir)
            except Exception:
                print_logs(stack)  # the DATA_DIR with the logs is deleted on the way out
                raise
            finally:
                platform.delete_all()
                floor.cleanup()
                isolated.cleanup()
    finally:
        test_stack.stack_env = test_env
        shutil.rmtree(workdir, ignore_errors=True)

    print("\nResults")
    deploy_ratio = report_deploys(ours, bare, bare_isolated)
    goals = [
        f"goal deploy (host route) <= {DEPLOY_GOAL}x docker run (median): "
        f"{verdict(deploy_ratio is not None and deploy_ratio <= DEPLOY_GOAL)} "
        f"({fmt_ratio(deploy_ratio)})"
    ]
    if throughput is not None:
        print()
        goals += report_throughput(throughput, args)
    print()
    for goal in goals:
        print(goal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
