"""1,000 apps registered, 100 running: one reconciler pass, the platform's own memory, and
the memory each running app costs the host. Starts a throw-away platform (loopback only).

Usage: .venv/bin/python bench/scale.py [--apps 1000] [--running 100] [--passes 5]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import stack as test_stack
from tests.support.images import HELLO_V1

GIB = 2**30
MIB = 2**20
# cgroup v1 (this machine kind); the v2 path is tried second
CGROUP_MEMORY_DIRS = (Path("/sys/fs/cgroup/memory/docker"), Path("/sys/fs/cgroup/system.slice"))


# --- /proc -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    name: str
    cmdline: list[str]


def processes() -> dict[int, Proc]:
    """Every process of the host, read from /proc (no psutil here)."""
    found: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        # "pid (name) state ppid ...": the name may hold spaces and parentheses
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        args = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        found[int(entry.name)] = Proc(int(entry.name), ppid, name, args)
    return found


def descendants(root: int, table: dict[int, Proc]) -> list[Proc]:
    """The root and every process below it."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(table[pid])
        todo.extend(children.get(pid, []))
    return out


def memory_of(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes; PSS splits shared pages between the processes sharing them."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                value = int(rest.split()[0]) * 1024
                rss, pss = (value, pss) if key == "Rss" else (rss, value)
    except (OSError, ValueError):
        pass
    return rss, pss


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def container_cgroup_bytes(container_id: str) -> int | None:
    """What the container's memory cgroup charges (the figure its limit is checked against)."""
    for base in CGROUP_MEMORY_DIRS:
        for leaf in (
            base / container_id / "memory.usage_in_bytes",
            base / f"docker-{container_id}.scope" / "memory.current",
        ):
            if leaf.exists():
                return int(leaf.read_text())
    return None


# --- the platform's processes --------------------------------------------------------------


def classify(proc: Proc) -> str:
    """Which program of the platform a child of supervisord runs, from its command line."""
    text = " ".join(proc.cmdline) or proc.name
    for part, needles in (
        ("PostgreSQL", ("postgres",)),
        ("Redis", ("redis",)),
        ("nginx (router)", ("nginx",)),
        ("API", ("minipaas.host.lifeline", "uvicorn")),
        ("workers", ("minipaas worker",)),
    ):
        if any(needle in text for needle in needles):
            return part
    return f"other ({proc.name})"


def programs_of(supervisord_pid: int, table: dict[int, Proc]) -> dict[int, str]:
    """pid -> the program of the platform it belongs to: supervisord itself, and each child of
    supervisord with all its descendants (PostgreSQL's backends, nginx's workers, the API's
    server processes)."""
    found = {supervisord_pid: "supervisord"}
    for child in table.values():
        if child.ppid == supervisord_pid:
            for proc in descendants(child.pid, table):
                found[proc.pid] = classify(child)
    return found


def platform_memory(supervisord_pid: int) -> dict[str, tuple[int, int, int]]:
    """(processes, RSS, PSS) per program of the platform (programs_of)."""
    from minipaas.db.session import dispose_engines

    # This process's own PostgreSQL connections (both pools) are backends too: not the
    # platform's
    dispose_engines()
    time.sleep(0.5)
    parts: dict[str, tuple[int, int, int]] = {}
    for pid, part in programs_of(supervisord_pid, processes()).items():
        rss, pss = memory_of(pid)
        count, total_rss, total_pss = parts.get(part, (0, 0, 0))
        parts[part] = (count + 1, total_rss + rss, total_pss + pss)
    return parts


def backends_by_program(supervisord_pid: int, database_url: str) -> dict[str, int]:
    """PostgreSQL's client backends, counted by the program whose connection each serves: the
    backend's client port (pg_stat_activity) is a local socket of that program (`ss -tnp`)."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as connection:
        ports = [
            int(port)
            for (port,) in connection.execute(
                "SELECT client_port FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid() AND client_port IS NOT NULL"
            )
        ]
    owners: dict[int, int] = {}  # local port -> pid
    listing = subprocess.run(["ss", "-Htnp"], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        match = re.search(r"pid=(\d+)", line)
        if len(fields) >= 4 and match:
            owners[int(fields[3].rsplit(":", 1)[1])] = int(match.group(1))
    program_of = programs_of(supervisord_pid, processes())
    counts: dict[str, int] = {}
    for port in ports:
        owner = owners.get(port)
        name = "not this platform" if owner is None else program_of.get(owner, "elsewhere")
        counts[name] = counts.get(name, 0) + 1
    return counts


def print_backends(supervisord_pid: int, database_url: str) -> None:
    backends = backends_by_program(supervisord_pid, database_url)
    shown = ", ".join(f"{name} {count}" for name, count in sorted(backends.items()))
    print(f"    PostgreSQL's client backends, by the program they serve: {shown}")


def print_platform_memory(title: str, parts: dict[str, tuple[int, int, int]]) -> tuple[int, int]:
    """Prints the table; returns the summed (RSS, PSS)."""
    print(f"  {title}")
    for part, (count, rss, pss) in sorted(parts.items(), key=lambda item: -item[1][1]):
        print(
            f"    {part:<16} {count:>3} processes  RSS {rss / MIB:7.1f} MiB  PSS {pss / MIB:7.1f}"
        )
    rss_total = sum(rss for _, rss, _ in parts.values())
    pss_total = sum(pss for _, _, pss in parts.values())
    print(f"    {'total':<16} {'':>13}  RSS {rss_total / MIB:7.1f} MiB  PSS {pss_total / MIB:7.1f}")
    return rss_total, pss_total


# --- per running app -----------------------------------------------------------------------


@dataclass(frozen=True)
class AppMemory:
    """Per running app, one entry each; PSS shares the pages of the shim's and the proxy's
    binaries between all of their copies (RSS counts them once per process)."""

    shim: list[tuple[int, int]]  # containerd-shim (RSS, PSS)
    proxy: list[tuple[int, int]]  # docker-proxy (RSS, PSS)
    inside: list[tuple[int, int]]  # docker-init and the app (RSS, PSS)
    cgroup: list[int]  # the container's memory cgroup: the app and its page cache


def per_app_memory(containers: list[tuple[str, int, int]]) -> AppMemory:
    """containers: (id, main pid, published port) of each running app."""
    table = processes()
    shims = {  # runc v2 runs one shim per container, named by `-id <container id>`
        arg: proc.pid
        for proc in table.values()
        if proc.name.startswith("containerd-shim")
        for arg in proc.cmdline
    }
    proxies = {
        proc.cmdline[proc.cmdline.index("-host-port") + 1]: proc.pid
        for proc in table.values()
        if proc.name == "docker-proxy" and "-host-port" in proc.cmdline
    }
    result = AppMemory([], [], [], [])
    for container_id, pid, port in containers:
        if container_id in shims:
            result.shim.append(memory_of(shims[container_id]))
        if str(port) in proxies:
            result.proxy.append(memory_of(proxies[str(port)]))
        inside = [memory_of(proc.pid) for proc in descendants(pid, table)]
        result.inside.append((sum(rss for rss, _ in inside), sum(pss for _, pss in inside)))
        charged = container_cgroup_bytes(container_id)
        if charged is not None:
            result.cgroup.append(charged)
    return result


def mean(values: Iterable[int]) -> float:
    listed = list(values)
    return statistics.mean(listed) if listed else 0.0


def mean_mib(values: list[int]) -> str:
    return f"{statistics.mean(values) / MIB:6.2f} MiB" if values else "   n/a"


# --- the platform ------------------------------------------------------------------------


def create_apps(api_url: str, headers: dict[str, str], count: int) -> list[dict[str, object]]:
    """Through the API, a few requests at a time (as several clients would)."""

    def create(chunk: Iterable[int]) -> list[dict[str, object]]:
        made = []
        with httpx.Client(base_url=api_url, headers=headers, timeout=60) as api:
            for number in chunk:
                body = {"name": f"scale-{number}", "image": HELLO_V1, "internal_port": 80}
                response = api.post("/apps", json=body)
                if response.status_code != 201:
                    raise RuntimeError(f"creating app {number}: {response.text}")
                made.append(dict(response.json()))
        return made

    chunks = [range(start, count, 4) for start in range(4)]
    with ThreadPoolExecutor(4) as pool:
        return [app for made in pool.map(create, chunks) for app in made]


def deploy_all(api: httpx.Client, app_ids: list[int], timeout: float) -> float:
    """Sends every deploy at once; returns seconds until every app is running (read from
    the database: the list endpoint pages)."""
    from sqlalchemy import func, select

    from minipaas.db.models import App, AppStatus, Deployment, DeploymentStatus
    from minipaas.db.session import get_session

    started = time.monotonic()
    for app_id in app_ids:
        response = api.post(f"/apps/{app_id}/deploy")
        if response.status_code != 202:
            raise RuntimeError(f"deploy of app {app_id} refused: {response.text}")
    while time.monotonic() - started < timeout:
        time.sleep(0.25)
        with get_session() as db:
            running = db.scalar(
                select(func.count()).where(App.id.in_(app_ids), App.status == AppStatus.RUNNING)
            )
            failed = db.scalars(
                select(Deployment.error).where(
                    Deployment.app_id.in_(app_ids), Deployment.status == DeploymentStatus.FAILED
                )
            ).all()
        if failed:
            raise RuntimeError(f"{len(failed)} deploys failed, the first: {failed[0]}")
        if running == len(app_ids):
            return time.monotonic() - started
    raise RuntimeError(f"not every app was running after {timeout:.0f} s")


def _timed(step: Callable[[], list[str]], into: dict[str, float]) -> Callable[[], list[str]]:
    def run() -> list[str]:
        began = time.perf_counter()
        try:
            return step()
        finally:
            into[step.__name__.strip("_")] = time.perf_counter() - began

    run.__name__ = step.__name__
    return run


def time_passes(count: int) -> list[tuple[float, dict[str, float]]]:
    """reconcile_once in this process (its settings point at the stack), step by step."""
    from minipaas.worker import reconciler

    results = []
    original = reconciler._steps
    for _ in range(count):
        steps: dict[str, float] = {}
        timed = tuple(_timed(step, steps) for step in original())
        reconciler._steps = lambda timed=timed: timed  # type: ignore[misc]
        try:
            began = time.perf_counter()
            actions = reconciler.reconcile_once()
            total = time.perf_counter() - began
        finally:
            reconciler._steps = original
        if actions:
            print(f"    (the pass repaired: {'; '.join(actions)[:300]})")
        results.append((total, steps))
    return results


def profile_pass(top: int) -> None:
    from minipaas.worker import reconciler

    profiler = cProfile.Profile()
    profiler.runcall(reconciler.reconcile_once)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    print(out.getvalue())


def running_containers(instance: str) -> list[tuple[str, int, int]]:
    import docker

    client = docker.from_env()
    found = []
    for summary in client.api.containers(filters={"label": f"io.minipaas.instance={instance}"}):
        attrs = client.api.inspect_container(summary["Id"])
        ports = [p["PublicPort"] for p in summary.get("Ports", []) if p.get("PublicPort")]
        found.append(
            (str(summary["Id"]), int(attrs["State"]["Pid"]), int(ports[0]) if ports else 0)
        )
    return found


def wrk_rate(url: str, token: str, seconds: int) -> float | None:
    """Requests per second with `wrk -t1 -c16` (None without wrk)."""
    import shutil

    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "-H", f"Authorization: Bearer {token}", url],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


# --- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000, help="apps registered")
    parser.add_argument("--running", type=int, default=100, help="of which deployed")
    parser.add_argument("--passes", type=int, default=5, help="reconciler passes timed")
    parser.add_argument("--workers", type=int, default=2, help="WORKER_PROCESSES")
    parser.add_argument("--wrk-seconds", type=int, default=5, help="0: skip the API figures")
    parser.add_argument("--profile", action="store_true", help="cProfile one reconciler pass")
    args = parser.parse_args()

    plain_env = test_stack.stack_env

    def scale_env(data_dir: Path) -> dict[str, str]:
        # The platform's defaults where the tests shorten them: the worker's own reconciler
        # runs every 15 s, so it seldom overlaps the passes timed here
        return {
            **plain_env(data_dir),
            "WORKER_PROCESSES": str(args.workers),
            "RECONCILE_INTERVAL_SECONDS": "15",
            "READY_TIMEOUT_SECONDS": "60",
        }

    test_stack.stack_env = scale_env
    try:
        with test_stack.running_stack(prefix="minipaas-bench-scale-") as stack:
            measure(stack, args)
    finally:
        test_stack.stack_env = plain_env


def measure(stack: test_stack.Stack, args: argparse.Namespace) -> None:
    from minipaas.api.app import IDLE_CHECK_SECONDS
    from minipaas.db.pools import IDLE_CLOSE_SECONDS
    from minipaas.host.supervisor import Supervisor
    from minipaas.services import routing

    # This process runs the reconciler as the supervised worker does (nginx is supervised)
    os.environ[routing.SUPERVISED_ENV] = "1"
    routing.get_router.cache_clear()
    supervisord = Supervisor(stack.settings).pid()
    if supervisord is None:
        raise RuntimeError("supervisord is not running")
    print(f"platform: {args.workers} worker(s), API {stack.api_url}, router {stack.router_url}")

    began = time.monotonic()
    apps = create_apps(stack.api_url, stack.admin_headers, args.apps)
    print(f"created {len(apps)} apps through the API in {time.monotonic() - began:.1f} s")

    before_rss, _ = print_platform_memory(
        f"the platform's own processes, {len(apps)} apps, none running:",
        platform_memory(supervisord),
    )
    before_pass = time_passes(2)
    print(f"  reconciler pass with none running: {fmt_passes(before_pass)}")

    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=60) as api:
        time.sleep(2)
        available_before = mem_available()
        to_run = [int(str(app["id"])) for app in apps[: args.running]]
        took = deploy_all(api, to_run, timeout=600)
        deployed_at = time.monotonic()
        print(f"{len(to_run)} deploys requested back to back: all running after {took:.1f} s")
        time.sleep(3)  # shims, proxies and apps settle
        available_after = mem_available()

    containers = running_containers(stack.settings.instance_name)
    print()
    print(f"[1] memory per running app ({len(containers)} containers of busybox httpd)")
    apps_memory = per_app_memory(containers)
    rows = (
        ("containerd-shim", apps_memory.shim),
        ("docker-proxy", apps_memory.proxy),
        ("docker-init + app", apps_memory.inside),
    )
    print(f"  {'mean per app':<28} {'RSS':>10} {'PSS':>10}")
    for label, pairs in rows:
        rss, pss = mean(r for r, _ in pairs), mean(p for _, p in pairs)
        print(f"  {label:<28} {rss / MIB:6.2f} MiB {pss / MIB:6.2f} MiB  ({len(pairs)} found)")
    cgroup = mean(apps_memory.cgroup)
    print(f"  {'container memory cgroup':<28} {cgroup / MIB:6.2f} MiB  (the app + its page cache)")
    shim_proxy_rss = mean(r for r, _ in apps_memory.shim) + mean(r for r, _ in apps_memory.proxy)
    shim_proxy_pss = mean(p for _, p in apps_memory.shim) + mean(p for _, p in apps_memory.proxy)
    upper = shim_proxy_rss + cgroup
    bottom_up = shim_proxy_pss + cgroup
    print(f"  {'shim + proxy + cgroup':<28} {upper / MIB:6.2f} MiB {bottom_up / MIB:6.2f} MiB")
    per_app = (available_before - available_after) / max(1, len(containers))
    print(
        f"  host MemAvailable drop / app   {per_app / MIB:6.2f} MiB  (includes kernel memory: "
        "netns, veth, conntrack; other processes on the host add noise)"
    )
    if per_app > 0:
        host_kib = int(Path("/proc/meminfo").read_text().split()[1])
        print(
            f"  -> about {int(host_kib * 1024 * 0.8 / per_app):,} running apps fit in 80 % of "
            f"this host's {host_kib / 2**20:.1f} GiB"
        )

    print()
    print("[2] the platform's own processes (supervisord's whole process tree)")
    burst_rss, _ = print_platform_memory(
        f"{len(apps)} apps, {len(containers)} running, "
        f"{time.monotonic() - deployed_at:.0f} s after the deploys:",
        platform_memory(supervisord),
    )
    print_backends(supervisord, stack.settings.database_url)
    print(f"  (with none running, just after the apps were created: {before_rss / MIB:.1f} MiB)")
    # The pools close connections that waited longer than IDLE_CLOSE_SECONDS; the API looks
    # every IDLE_CHECK_SECONDS, a worker every reconciler interval
    rest = IDLE_CLOSE_SECONDS + max(IDLE_CHECK_SECONDS, stack.settings.reconcile_interval_seconds)
    time.sleep(rest + 5)
    after_rss, after_pss = print_platform_memory(
        f"the same, at rest {time.monotonic() - deployed_at:.0f} s after the deploys:",
        platform_memory(supervisord),
    )
    print_backends(supervisord, stack.settings.database_url)

    print()
    print(
        f"[3] reconciler pass, {len(apps)} apps, {len(containers)} running ({args.passes} passes)"
    )
    passes = time_passes(args.passes)
    for number, (total, steps) in enumerate(passes, 1):
        shown = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in steps.items())
        print(f"  pass {number}: {total * 1000:.0f} ms ({shown} ms)")
    if args.profile:
        profile_pass(30)

    rates: dict[str, float | None] = {}
    if args.wrk_seconds:
        print()
        print(f"[4] API with {len(apps)} apps (wrk -t1 -c16 -d{args.wrk_seconds}s)")
        token = stack.env["ADMIN_TOKEN"]
        app_id = apps[len(apps) // 2]["id"]
        for label, path in (
            ("GET /apps/{id}", f"/apps/{app_id}"),
            ("GET /apps?limit=200", "/apps?limit=200"),
        ):
            rates[label] = wrk_rate(f"{stack.api_url}{path}", token, args.wrk_seconds)
            shown = "wrk missing" if rates[label] is None else f"{rates[label]:.0f} req/s"
            print(f"  {label:<22} {shown}")

    median_pass = statistics.median(total for total, _ in passes)
    print()
    print("Goals (issue 10)")
    print(f"  reconciler pass < 2 s (median):     {verdict(median_pass < 2)} ({median_pass:.2f} s)")
    print(
        f"  platform RSS < 1 GiB (at rest):     {verdict(after_rss < GIB)} "
        f"({after_rss / MIB:.0f} MiB summed; PSS {after_pss / MIB:.0f} MiB: the sum counts "
        "shared pages once per process; just after the burst of deploys: "
        f"{burst_rss / MIB:.0f} MiB)"
    )
    for label, goal in (("GET /apps/{id}", 1000.0), ("GET /apps?limit=200", 330.0)):
        rate = rates.get(label)
        if rate is not None:
            print(f"  {label} >= {goal:.0f} req/s:{'':<5}{verdict(rate >= goal)} ({rate:.0f})")
    print(
        f"  memory per running app (planning):  {per_app / MIB:.1f} MiB of host memory; "
        f"shim + proxy + cgroup {bottom_up / MIB:.1f} MiB (PSS), {upper / MIB:.1f} MiB (RSS)"
    )


def fmt_passes(passes: list[tuple[float, dict[str, float]]]) -> str:
    return ", ".join(f"{total * 1000:.0f} ms" for total, _ in passes)


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


if __name__ == "__main__":
    main()
