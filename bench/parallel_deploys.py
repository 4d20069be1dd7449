"""N deploys sent at once: when is each app serving through the router, with 1 worker and
with several? Starts a throw-away platform per worker count (loopback only), and measures
Docker's own floor in the same run: N `docker run` of the same image, as many at a time as
there are workers, on the kind of network the platform's apps join, each until it answers 200.

Usage: .venv/bin/python bench/parallel_deploys.py [--apps 10] [--workers 1 2] [--no-floor]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.process_cpu import cpu_of
from tests.support import stack as test_stack
from tests.support.flows import create_app
from tests.support.images import HELLO_V1

from minipaas.host.service_exec import group_members, recorded_group
from minipaas.host.supervisor import Supervisor
from minipaas.runtime.docker_runtime import ICC_OPTION, default_bridge_isolated

# At most this many deploy requests in flight at once (as that many clients would send them)
SENDERS = 10
POLL_SECONDS = 0.02
TIMEOUT_SECONDS = 300.0
BENCH_LABEL = "io.minipaas.bench"


def answers_200(port: int, host: str | None = None) -> Callable[[], bool]:
    """A check: one GET on a fresh connection, and only the status line read. The poller asks
    50 times a second per app and shares the cores with what it measures: with http.client
    it used ~27 ms of CPU per deploy (50 at once), 19 ms like this; the workers use ~40."""
    request = f"GET / HTTP/1.1\r\nHost: {host or '127.0.0.1'}\r\nConnection: close\r\n\r\n"
    raw = request.encode()

    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(raw)
                head = connection.recv(16)
        except OSError:
            return False
        return head[:5] == b"HTTP/" and head[8:13] == b" 200 "

    return check


def serving_times(waiting: dict[str, Callable[[], bool]], started: float) -> list[float]:
    """Polls every check until each has passed once; their times since `started`, sorted."""
    done: list[float] = []
    while waiting and time.monotonic() - started < TIMEOUT_SECONDS:
        for name, check in list(waiting.items()):
            if check():
                del waiting[name]
                done.append(time.monotonic() - started)
        time.sleep(POLL_SECONDS)
    if waiting:
        raise RuntimeError(f"{len(waiting)} never answered 200 within {TIMEOUT_SECONDS:.0f} s")
    return sorted(done)


def platform_times(
    apps: int, workers: int, *, floor: bool
) -> tuple[list[float], float, list[float] | None]:
    """The platform's serving times and when the last request was answered, then (the stack
    still up, so its images are) Docker's floor with as many at a time as workers."""
    plain_env = test_stack.stack_env

    def env_with_workers(data_dir: Path) -> dict[str, str]:
        # The platform's default reconciler interval (the tests' 1 s would add passes here)
        return {
            **plain_env(data_dir),
            "WORKER_PROCESSES": str(workers),
            "RECONCILE_INTERVAL_SECONDS": "15",
        }

    test_stack.stack_env = env_with_workers
    try:
        with test_stack.running_stack(prefix="minipaas-bench-parallel-") as stack:
            times, sent = _measure(stack, apps)
            return times, sent, docker_floor(apps, workers) if floor else None
    finally:
        test_stack.stack_env = plain_env


def _chunks(items: list[int], count: int) -> list[list[int]]:
    return [items[start::count] for start in range(count) if items[start::count]]


def _api_cpu_seconds(stack: test_stack.Stack) -> float:
    """CPU used so far by the API's server processes."""
    pgid = recorded_group(Supervisor(stack.settings).group_file("api"))
    return sum(cpu_of(group_members(pgid)).values()) if pgid is not None else 0.0


def _database_sessions() -> int:
    """Connections PostgreSQL has accepted so far (each costs it a backend's start)."""
    from minipaas.db.session import read_engine

    with read_engine().connect() as connection:
        statement = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        return int(connection.exec_driver_sql(statement).scalar() or 0)


def _measure(stack: test_stack.Stack, apps: int) -> tuple[list[float], float]:
    """Returns when each app served, and when the last deploy request was answered."""
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as api:
        made = [create_app(api, f"par-{n}", HELLO_V1) for n in range(apps)]
    cpu_before, sessions_before = _api_cpu_seconds(stack), _database_sessions()

    def send(app_ids: Iterable[int]) -> float:
        with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=60) as c:
            for app_id in app_ids:
                response = c.post(f"/apps/{app_id}/deploy")
                assert response.status_code == 202, response.text
        return time.monotonic() - started

    # Clients connect first, so the clock measures deploys, not connection setup
    started = time.monotonic()
    with ThreadPoolExecutor(SENDERS) as pool:
        sending = pool.map(send, _chunks([app["id"] for app in made], SENDERS))
        port = stack.settings.router_port
        checks: dict[str, Callable[[], bool]] = {
            app["name"]: _host_check(port, f"{app['name']}.{stack.settings.apps_domain}")
            for app in made
        }
        last_answer = max(sending)  # the requests' own cost, before the apps' polling adds
        api_cpu = _api_cpu_seconds(stack) - cpu_before
        sessions = _database_sessions() - sessions_before
        times = serving_times(checks, started)
    print(
        f"  {apps} deploy requests ({SENDERS} clients): API CPU {api_cpu / apps * 1000:.1f} ms "
        f"per request; {sessions} PostgreSQL connection(s) opened meanwhile (API and workers)",
        flush=True,
    )
    return times, last_answer


def _host_check(port: int, host: str) -> Callable[[], bool]:
    return answers_200(port, host)


def floor_network(client: Any) -> str | None:
    """The kind of network the platform's apps join (APPS_BRIDGE=auto): None, Docker's
    default bridge, when the engine keeps containers on it apart; else the name of a new
    user-defined one with inter-container traffic off."""
    if default_bridge_isolated(client.api):
        return None
    label = secrets.token_hex(4)
    return str(
        client.networks.create(
            f"minipaas-bench-{label}",
            driver="bridge",
            options={ICC_OPTION: "false"},
            labels={BENCH_LABEL: label},
        ).name
    )


def docker_floor(apps: int, at_a_time: int, image: str = HELLO_V1) -> list[float]:
    """`docker run -d -p 127.0.0.1::80 --init IMAGE` for each app, `at_a_time` in flight, on
    the kind of network the platform's apps join (floor_network)."""
    import docker

    client = docker.from_env(timeout=120)
    label = secrets.token_hex(4)
    network = floor_network(client)
    checks: dict[str, Callable[[], bool]] = {}

    def run(number: int) -> None:
        container: Any = client.containers.run(
            image,
            detach=True,
            init=True,
            ports={"80/tcp": ("127.0.0.1", None)},
            labels={BENCH_LABEL: label},
            **({"network": network} if network else {}),
        )
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
        checks[f"floor-{number}"] = _port_check(port)

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(at_a_time) as pool:
            running = pool.map(run, range(apps))
            # Poll the ones already started while the others start, as the platform's poller
            done: list[float] = []
            for _ in running:
                for name, check in list(checks.items()):
                    if check():
                        del checks[name]
                        done.append(time.monotonic() - started)
        return sorted(done + serving_times(checks, started))
    finally:
        for container in client.containers.list(
            all=True, filters={"label": f"{BENCH_LABEL}={label}"}
        ):
            container.remove(force=True)
        if network:
            client.networks.get(network).remove()


def _port_check(port: int) -> Callable[[], bool]:
    return answers_200(port)


def shown(times: list[float]) -> str:
    return ", ".join(f"{t:.1f}" for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-floor", action="store_true", help="skip Docker's own floor")
    args = parser.parse_args()
    last: dict[int, float] = {}
    floors: dict[int, float] = {}
    for workers in args.workers:
        times, sent, floor = platform_times(args.apps, workers, floor=not args.no_floor)
        last[workers] = times[-1]
        print(
            f"{args.apps} deploys at once, {workers} worker(s): serving after {shown(times)} s "
            f"(the last deploy request was answered after {sent:.1f} s)",
            flush=True,
        )
        if floor is not None:
            floors[workers] = floor[-1]
            print(
                f"  floor, {args.apps} docker run {workers} at a time (the apps' network kind): "
                f"serving after {shown(floor)} s",
                flush=True,
            )
    base = args.workers[0]
    for workers in args.workers[1:]:
        print(f"last app serving: {workers} workers {last[workers] / last[base]:.2f}x {base}")
    for workers, floor_last in floors.items():
        print(
            f"last app serving, {workers} worker(s): {last[workers]:.1f} s, "
            f"{last[workers] / floor_last:.2f}x Docker's floor ({floor_last:.1f} s)"
        )
    goal = {10: 2.5, 50: 10.0}.get(args.apps)
    if goal is not None:
        best = min(last.values())
        met = "met" if best <= goal else "NOT MET"
        print(f"goal: {args.apps} at once serving within {goal:g} s: {met} (best {best:.1f} s)")


if __name__ == "__main__":
    main()
