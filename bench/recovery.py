"""Seconds from SIGKILL of each supervised process until the platform serves again.

Starts a throw-away platform (the tests' `running_stack()`, under its supervisor), deploys one
app, then SIGKILLs each program three times (the master process alone) and measures until the
API's /health/ready answers 200 and the app answers on its host route again; then `docker kill`s
the app's container three times and measures until it serves again, and last deploys an app
that exits a second after it starts (a crash loop): the gaps from each crash to the restart
that followed it (they should double: 1, 2, 4, 8 s) and the worker's CPU meanwhile (it waits,
it does not spin). Loopback only.

Usage: .venv/bin/python bench/recovery.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.process_cpu import cpu_seconds
from tests.support.flows import create_app, deploy
from tests.support.images import CRASH_LOOPER, HELLO_V1
from tests.support.stack import Stack, running_stack

from minipaas.host.platform import SupervisedProcess, service

PROGRAMS = ("postgres", "redis", "worker", "api", "router")


def serving(stack: Stack, program: SupervisedProcess, killed: int, host: str) -> bool:
    try:
        return (
            program.pid() not in (None, killed)
            and httpx.get(f"{stack.api_url}/health/ready", timeout=1).status_code == 200
            and httpx.get(stack.router_url, headers={"Host": host}, timeout=1).status_code == 200
        )
    except httpx.HTTPError:
        return False


def time_to_recover(stack: Stack, name: str, host: str) -> float:
    program = service(stack.settings, name)
    pid = program.pid()
    assert pid is not None, f"{name} is not running"
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while not serving(stack, program, pid, host):
        if time.monotonic() - started > 60:
            return float("inf")
        time.sleep(0.05)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with running_stack(prefix="minipaas-bench-recovery-") as stack:
        with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers) as api:
            app = create_app(api, "recovery-timing", HELLO_V1)
            deploy(api, app["id"])
        host = f"recovery-timing.{stack.settings.apps_domain}"
        for name in PROGRAMS:
            times = []
            for _ in range(args.rounds):
                times.append(time_to_recover(stack, name, host))
                time.sleep(1)
            shown = ", ".join(f"{seconds:.2f}" for seconds in times)
            print(f"{name:<9} SIGKILLed: serving again after {shown} s (goal < 10 s)")
        killed_app = [app_killed(stack, app["id"], host) for _ in range(args.rounds)]
        shown = ", ".join(f"{seconds:.2f}" for seconds in killed_app)
        print(f"app container docker-killed: serving again after {shown} s (goal < 5 s)")
        crash_loop(stack)


def app_killed(stack: Stack, app_id: int, host: str) -> float:
    """`docker kill` of the app's container (as an OOM kill or a crash): until it serves."""
    import docker

    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers) as api:
        container = api.get(f"/apps/{app_id}").json()["container_name"]
    docker.from_env().containers.get(container).kill()
    killed = time.monotonic()
    while time.monotonic() - killed < 120:
        try:
            page = httpx.get(stack.router_url, headers={"Host": host}, timeout=1)
            if page.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    took = time.monotonic() - killed
    time.sleep(2)  # the healer marks it running again before the next round
    return took


def crash_loop(stack: Stack, restarts: int = 4) -> None:
    """An app that exits a second after it starts: the crash -> restart gaps (backing off) and
    the worker's CPU share until the `restarts`-th restart crashed."""
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers) as api:
        app_id = create_app(api, "recovery-crash-loop", CRASH_LOOPER)["id"]
        deployment_id = deploy(api, app_id)["id"]
        cpu_before, began = worker_cpu_seconds(stack), time.monotonic()
        deadline = began + 60
        while time.monotonic() < deadline:
            app = api.get(f"/apps/{app_id}").json()
            if app["status"] == "crashed" and app["restart_count"] >= restarts:
                break
            time.sleep(0.1)
        cpu = (worker_cpu_seconds(stack) - cpu_before) / (time.monotonic() - began)
        events = api.get(f"/apps/{app_id}/deployments/{deployment_id}/events").json()
        api.post(f"/apps/{app_id}/stop")
    gaps = ", ".join(f"{gap:.2f}" for gap in restart_gaps(events))
    print(
        f"crash loop: crash -> restart after {gaps} s (backing off from 1 s); "
        f"worker CPU {cpu:.1%} of a core meanwhile"
    )


def worker_cpu_seconds(stack: Stack) -> float:
    """The worker program's CPU: its process and every process in its group (its workers)."""
    pid = service(stack.settings, "worker").pid()
    if pid is None:
        return 0.0
    group = os.getpgid(pid)
    members = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    return sum(cpu_seconds(member) for member in members if _in_group(member, group))


def _in_group(pid: int, group: int) -> bool:
    try:
        return os.getpgid(pid) == group
    except OSError:
        return False


def restart_gaps(events: list[dict[str, Any]]) -> list[float]:
    """Seconds from each "crashed" event to the "restarted" one after it."""
    gaps, crashed_at = [], None
    for event in events:
        at = datetime.fromisoformat(event["at"])
        if event["kind"] == "crashed":
            crashed_at = at
        elif event["kind"] == "restarted" and crashed_at is not None:
            gaps.append((at - crashed_at).total_seconds())
            crashed_at = None
    return gaps


if __name__ == "__main__":
    main()
