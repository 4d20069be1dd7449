"""Router throughput with per-app traffic metrics on vs off (ROUTER_METRICS), same run.

Starts one reload-free router (`LuaRouter`) on a free loopback port under a temp DATA_DIR and
one "app": a plain nginx worker answering 200 from memory (keep-alive, so the proxy's own cost
shows). No Docker. Each round reloads the router with ROUTER_METRICS=true and runs
`wrk -t1 -c16` by Host, then the same with false (the order flips every round, so drift hits
both); each run follows a 1 s unmeasured warm-up. Prints the median requests/s of each mode,
the median of the per-round on/off ratios (goal: metrics on >= 0.95x off) and the requests
the router counted next to wrk's own total.

Every request goes to 127.0.0.1. Prints a table; exits 0 whatever the numbers.

Usage: .venv/bin/python bench/router_metrics.py [--duration 3] [--rounds 9]
"""

from __future__ import annotations

import argparse
import re
import shutil
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
sys.path.insert(0, str(ROOT))

from bench.router_switch import app_servers, free_port, nginx_version, route  # noqa: E402

from minipaas.config import Settings  # noqa: E402
from minipaas.router import traffic  # noqa: E402
from minipaas.router.lua_router import LuaRouter  # noqa: E402

GOAL = 0.95  # metrics on: at least 0.95x the requests/s of metrics off


@contextmanager
def one_router(workdir: Path, app_port: int) -> Iterator[tuple[LuaRouter, LuaRouter]]:
    """One nginx, as two LuaRouters that differ only in ROUTER_METRICS: ensure_running() of
    either reloads it into that mode. Two nginx side by side measured 2% apart by themselves
    (same config, same run), as much as the cost being measured."""
    shared = {
        "data_dir": workdir / "data",
        "router_host": "127.0.0.1",
        "router_port": free_port(),
        "app_port": free_port(),
        "_env_file": None,
    }
    on = LuaRouter(Settings(**shared, router_metrics=True))  # type: ignore[arg-type]
    off = LuaRouter(Settings(**shared, router_metrics=False))  # type: ignore[arg-type]
    on.ensure_running()
    try:
        on.replace_all([route(on, 1, app_port)])
        yield on, off
    finally:
        on.stop()


def wrk(router: LuaRouter, duration: int) -> tuple[float, int]:
    """(requests/s, requests completed) of one wrk run by Host."""
    host = f"app1.{router.settings.apps_domain}"
    command = ["wrk", "-t1", "-c16", f"-d{duration}s", "-H", f"Host: {host}"]
    command.append(f"{router.settings.router_probe_url}/")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"([0-9]+) requests in", out)
    if not rps or not total:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(rps.group(1)), int(total.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=9, help="wrk runs per router (median)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("router metrics: skipped (no wrk installed)")
        return
    workdir = Path(tempfile.mkdtemp(prefix="mpm-"))  # short: the control socket path
    try:
        with app_servers(workdir / "apps") as (app_port, _), one_router(workdir, app_port) as pair:
            measure(*pair, args.duration, args.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def switch(router: LuaRouter) -> None:
    """Reloads nginx into this router's mode, then warms the new workers (JIT, upstream
    connections) with a short unmeasured run."""
    router.ensure_running()
    time.sleep(0.5)  # the old workers finish and leave
    wrk(router, 1)


def measure(on: LuaRouter, off: LuaRouter, duration: int, rounds: int) -> None:
    results: dict[str, list[float]] = {"metrics on": [], "metrics off": []}
    sent = counted = 0
    for index in range(rounds):
        order = [("metrics on", on), ("metrics off", off)]
        for name, router in order if index % 2 == 0 else reversed(order):
            switch(router)
            if router is on:
                time.sleep(traffic.FLUSH_SECONDS * 4)  # workers add their counts this often
                before = traffic.totals(on)[1].requests
            rps, total = wrk(router, duration)
            results[name].append(rps)
            if router is on:
                sent += total
                time.sleep(traffic.FLUSH_SECONDS * 4)
                counted += traffic.totals(on)[1].requests - before
    print(f"nginx {nginx_version()}; wrk -t1 -c16 -d{duration}s by Host, keep-alive, 127.0.0.1")
    print(f"Router throughput, one nginx reloaded between modes, {rounds} rounds")
    for name, runs in results.items():
        spread = ", ".join(f"{r:.0f}" for r in runs)
        print(f"  {name:<12} median {statistics.median(runs):>7.0f} req/s   ({spread})")
    # Each round's two runs are next to each other: the median of their ratios is the least
    # moved by other load on the machine
    ratios = [a / b for a, b in zip(results["metrics on"], results["metrics off"], strict=True)]
    ratio = statistics.median(ratios)
    print(f"  on/off per round: {', '.join(f'{r:.3f}' for r in ratios)}")
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f" goal metrics on >= {GOAL}x metrics off: {verdict} ({ratio:.3f}x)")
    # wrk does not count the requests still open when it stops; nginx answers them anyway
    print(f" requests the router counted: {counted} (wrk completed {sent})")


if __name__ == "__main__":
    main()
