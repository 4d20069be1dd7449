"""API throughput with 200 apps, next to a bare handler's floor measured in the same run.

Starts a throw-away platform (the tests' `running_stack()`), registers 200 apps as the admin,
then runs `wrk -t1 -c16` against three endpoints of the API and of the floor
(bench/api_floor.py: the same query, one SQL statement, rows straight to JSON, no
middleware, served by the same server stack: the same number of uvicorn processes started
by minipaas.host.lifeline). Targets alternate within each round; the median round is shown.

Also printed: the CPU each server process used and (for the API) how many requests each
answered, from its Prometheus counters: the work must be spread over the processes.

`--driver-floor` adds a second floor whose statement runs on the driver's cursor rather than
through SQLAlchemy's execute, as the API's token and page reads do (db.driver_reads); the
goal's ratio stays against the first floor, the one it was set against.

`--compare-src DIR` also starts `python -m minipaas api` (uvicorn --workers 2) from another
source tree (e.g. `git archive HEAD src | tar -x -C DIR`) against the same database, so
before and after are measured side by side.

Not a pass/fail test: prints whether each goal was met and exits 0.

Usage: .venv/bin/python bench/api_throughput.py [--duration 10] [--rounds 2] [--apps 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from bench.process_cpu import cpu_of  # noqa: E402
from tests.support.images import HELLO_V1  # noqa: E402
from tests.support.stack import Stack, free_port, running_stack  # noqa: E402

from minipaas.host.lifeline import process_count  # noqa: E402
from minipaas.host.service_exec import group_members, recorded_group  # noqa: E402
from minipaas.host.supervisor import Supervisor  # noqa: E402

# (name, path or "{id}" for a random app per request, goal in req/s)
ENDPOINTS = (
    ("GET /apps/{id}", "/apps/{id}", 1700.0),
    ("GET /apps?limit=200", "/apps?limit=200", 530.0),
    ("GET /health", "/health", 6000.0),
)
P99_GOAL = 0.050  # a single app, seconds
FLOOR_GOAL = 0.6  # the API at least 0.6x the bare handler

# wrk: a random registered app per request; one JSON line of results at the end
_WRK_SCRIPT = """
local ids = {%(ids)s}
local template = "%(path)s"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  local path = template:gsub("{id}", tostring(ids[math.random(#ids)]))
  return wrk.format("GET", path)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"seconds":%%f,"p50":%%d,"p99":%%d,"errors":%%d,"non2xx":%%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Sample:
    rps: float
    requests: int
    p50: float  # seconds
    p99: float
    errors: int
    cpu: dict[int, float]  # pid -> CPU seconds during the run
    served: dict[int, float] = field(default_factory=dict)  # pid -> requests (API only)
    around: dict[str, float] = field(default_factory=dict)  # CPU seconds of other processes


@dataclass
class Target:
    name: str
    url: str
    pgid: int
    metrics_dir: Path | None = None
    # Other processes whose CPU is shown next to the servers' (name -> their pids)
    around: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)


# --- processes ------------------------------------------------------------------------------


def _cpu_of_group(pgid: int) -> dict[int, float]:
    return cpu_of(group_members(pgid))


def _with_children(parent: int) -> list[int]:
    """The process and its children (PostgreSQL's backends)."""
    found = [parent]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def _served_by_pid(metrics_dir: Path | None) -> dict[int, float]:
    """Requests answered per API process, from the Prometheus multiprocess counter files."""
    if metrics_dir is None:
        return {}
    from prometheus_client.mmap_dict import MmapedDict

    served: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        with contextlib.suppress(Exception):
            mmap = MmapedDict(str(path), read_mode=True)  # type: ignore[no-untyped-call]
            values = mmap.read_all_values()  # type: ignore[no-untyped-call]
            pid = int(path.stem.split("_")[-1])
            served[pid] = sum(
                value
                for key, value, _ in values
                if json.loads(key)[1] == "minipaas_http_requests_total"
            )
    return served


def _delta(after: dict[int, float], before: dict[int, float]) -> dict[int, float]:
    return {pid: after[pid] - before.get(pid, 0.0) for pid in after}


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


@contextlib.contextmanager
def server(command: list[str], url: str, extra_env: dict[str, str]) -> Iterator[int]:
    """A server of our own in its own process group (its pgid); ended with the group."""
    env = {**os.environ, **extra_env}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"{url}/health")
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


# --- measuring ------------------------------------------------------------------------------


def register_apps(stack: Stack, count: int) -> list[int]:
    ids = []
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as api:
        for n in range(count):
            body = {"name": f"bench-{n}", "image": HELLO_V1, "internal_port": 80}
            if n % 3 == 0:
                body["env"] = {"GREETING": "hi", "MODE": "bench"}
            response = api.post("/apps", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])
        for app_id in ids[::20]:  # a few apps with domains of their own
            api.post(f"/apps/{app_id}/domains", json={"hostname": f"www{app_id}.example.com"})
    return ids


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    command += ["-s", str(script), url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            parsed: dict[str, float] = json.loads(line[len("RESULT ") :])
            return parsed
    raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")


def measure(target: Target, script: Path, args: argparse.Namespace) -> Sample:
    run_wrk(target.url, script, args.connections, args.warmup_seconds)
    cpu_before = _cpu_of_group(target.pgid)
    around_before = {name: cpu_of(pids()) for name, pids in target.around.items()}
    served_before = _served_by_pid(target.metrics_dir)
    result = run_wrk(target.url, script, args.connections, args.duration)
    return Sample(
        rps=result["requests"] / result["seconds"],
        requests=int(result["requests"]),
        p50=result["p50"] / 1e6,
        p99=result["p99"] / 1e6,
        errors=int(result["errors"] + result["non2xx"]),
        cpu=_delta(_cpu_of_group(target.pgid), cpu_before),
        around={
            name: sum(_delta(cpu_of(pids()), around_before[name]).values())
            for name, pids in target.around.items()
        },
        served=_delta(_served_by_pid(target.metrics_dir), served_before),
    )


def write_script(directory: Path, name: str, path: str, ids: list[int], token: str) -> Path:
    script = directory / f"{name}.lua"
    values = {"ids": ",".join(map(str, ids)), "path": path, "token": token}
    script.write_text(_WRK_SCRIPT % values)
    return script


# --- report ---------------------------------------------------------------------------------


def cpu_per_request(samples: list[Sample]) -> float:
    used = sum(sum(sample.cpu.values()) for sample in samples)
    return used / max(1, sum(sample.requests for sample in samples))


def median_sample(samples: list[Sample]) -> Sample:
    ordered = sorted(samples, key=lambda s: s.rps)
    return ordered[(len(ordered) - 1) // 2]


def report(targets: list[Target], args: argparse.Namespace) -> None:
    floor = next(t for t in targets if t.name == "floor")
    print(
        f"\nwrk -t1 -c{args.connections} -d{args.duration:g}s, {args.apps} apps, "
        f"{args.rounds} round(s), median round shown (range of rounds in brackets)"
    )
    print(
        f"{'endpoint':<22}{'target':<10}{'req/s':>9}  {'range':<17}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'errors':>7}{'vs floor':>9}{'CPU/req':>10}{'vs floor':>9}  goal"
    )
    for name, _, goal in ENDPOINTS:
        floor_rps = statistics.median(s.rps for s in floor.samples[name])
        floor_cost = cpu_per_request(floor.samples[name])
        for target in targets:
            samples = target.samples[name]
            mid = median_sample(samples)
            rps = statistics.median(s.rps for s in samples)
            spread = f"[{min(s.rps for s in samples):.0f}-{max(s.rps for s in samples):.0f}]"
            verdict = ""
            if target.name == "api":
                met = rps >= goal and (name != ENDPOINTS[0][0] or mid.p99 < P99_GOAL)
                ratio_met = rps / floor_rps >= FLOOR_GOAL
                verdict = (
                    f"{'met' if met else 'MISSED'} ({goal:.0f} req/s"
                    f"{', p99 < 50 ms' if name == ENDPOINTS[0][0] else ''}); "
                    f"floor ratio {'met' if ratio_met else 'MISSED'}"
                )
            cost = cpu_per_request(samples)
            print(
                f"{name:<22}{target.name:<10}{rps:>9.0f}  {spread:<17}{mid.p50 * 1000:>8.1f}"
                f"{mid.p99 * 1000:>8.1f}{sum(s.errors for s in samples):>7}"
                f"{rps / floor_rps:>8.2f}x{cost * 1000:>8.2f}ms{floor_cost / cost:>8.2f}x"
                f"  {verdict}"
            )
    print(
        "CPU/req: CPU seconds of the server processes per answered request; its 'vs floor' "
        "(floor's CPU/req over the target's) holds better than req/s when other work shares "
        "the cores."
    )
    print(
        "\nWork per server process during the measured runs (all rounds): CPU seconds, and "
        "requests answered (API, from its Prometheus counters)"
    )
    for target in targets:
        for name, _, _ in ENDPOINTS:
            cpu: dict[int, float] = {}
            served: dict[int, float] = {}
            for sample in target.samples[name]:
                for pid, value in sample.cpu.items():
                    cpu[pid] = cpu.get(pid, 0.0) + value
                for pid, value in sample.served.items():
                    served[pid] = served.get(pid, 0.0) + value
            busy = {pid: value for pid, value in cpu.items() if value >= 0.05}
            parts = [
                f"pid {pid}: {value:.1f} s"
                + (f", {served[pid]:.0f} req" if served.get(pid) else "")
                for pid, value in sorted(busy.items())
            ]
            for other in target.around:
                used = sum(sample.around[other] for sample in target.samples[name])
                parts.append(f"{other}: {used:.1f} s")
            print(f"  {target.name:<10}{name:<22}" + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--compare-src", type=Path, help="another tree's src/ to run beside")
    parser.add_argument(
        "--api-processes", type=int, help="API_PROCESSES of the platform (and of the floor)"
    )
    parser.add_argument(
        "--driver-floor",
        action="store_true",
        help="also a floor whose statement runs on the driver's cursor (bench/api_floor.py)",
    )
    args = parser.parse_args()
    if args.api_processes:
        os.environ["API_PROCESSES"] = str(args.api_processes)
    with (
        running_stack(prefix="minipaas-bench-api-") as stack,
        tempfile.TemporaryDirectory(prefix="minipaas-bench-api-") as scratch,
        contextlib.ExitStack() as servers,
    ):
        token = stack.env["ADMIN_TOKEN"]
        started = time.monotonic()
        ids = register_apps(stack, args.apps)
        print(f"registered {len(ids)} apps in {time.monotonic() - started:.1f} s")
        settings = stack.settings
        supervisor = Supervisor(settings)
        api_pgid = recorded_group(supervisor.group_file("api"))
        if api_pgid is None:
            sys.exit("the API's process group is not recorded: is the platform running?")
        postmaster = supervisor.program_pid("postgres") or 0
        supervisord = supervisor.pid()
        around: dict[str, Callable[[], list[int]]] = {
            "postgres": lambda: _with_children(postmaster),
            # it relays every log line of the API to files
            "supervisord": lambda: [supervisord] if supervisord else [],
        }
        api_metrics = settings.run_dir / "metrics"
        targets = [Target("api", stack.api_url, api_pgid, api_metrics, around=around)]
        processes = process_count(settings.api_processes)
        floors = [("floor", "0")] + ([("drv floor", "1")] if args.driver_floor else [])
        for name, on_driver in floors:
            floor_port = free_port()
            floor_url = f"http://127.0.0.1:{floor_port}"
            floor_command = [sys.executable, "-m", "minipaas.host.lifeline"]
            floor_command += ["--port", str(floor_port), "--processes", str(processes)]
            floor_command += ["--app", "bench.api_floor:create_floor_app"]
            env = {"PYTHONPATH": str(ROOT), "FLOOR_ON_DRIVER": on_driver}
            pgid = servers.enter_context(server(floor_command, floor_url, env))
            targets.append(Target(name, floor_url, pgid))
        if args.compare_src is not None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "minipaas", "api", "--port", str(port)]
            env = {"PYTHONPATH": str(args.compare_src.resolve())}
            pgid = servers.enter_context(server(command, url, env))
            targets.append(Target("compared", url, pgid, None))
        print(f"API and floor: {processes} server processes each")
        scripts = {
            name: write_script(Path(scratch), f"e{n}", path, ids, token)
            for n, (name, path, _) in enumerate(ENDPOINTS)
        }
        for target in targets:
            target.samples = {name: [] for name, _, _ in ENDPOINTS}
        for round_number in range(args.rounds):
            for name, _, _ in ENDPOINTS:
                order = targets if round_number % 2 == 0 else targets[::-1]
                for target in order:
                    target.samples[name].append(measure(target, scripts[name], args))
            print(f"round {round_number + 1} of {args.rounds} done")
        report(targets, args)


if __name__ == "__main__":
    main()
