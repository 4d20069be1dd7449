"""N deploys sent at once: when is each app serving through the router, with 1 worker and
with several? Starts a throw-away platform per worker count (loopback only).

Usage: .venv/bin/python bench/parallel_deploys.py [--apps 10] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import stack as test_stack
from tests.support.flows import create_app
from tests.support.images import HELLO_V1


def serving_times(apps: int, workers: int) -> list[float]:
    plain_env = test_stack.stack_env

    def env_with_workers(data_dir: Path) -> dict[str, str]:
        return {**plain_env(data_dir), "WORKER_PROCESSES": str(workers)}

    test_stack.stack_env = env_with_workers  # type: ignore[assignment]
    try:
        with test_stack.running_stack(prefix="minipaas-bench-parallel-") as stack:
            return _measure(stack, apps)
    finally:
        test_stack.stack_env = plain_env  # type: ignore[assignment]


def _measure(stack: test_stack.Stack, apps: int) -> list[float]:
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as api:
        names = [create_app(api, f"par-{n}", HELLO_V1)["name"] for n in range(apps)]
        ids = [app["id"] for app in api.get("/apps", params={"limit": 500}).json()]
        started = time.monotonic()
        for app_id in ids:
            assert api.post(f"/apps/{app_id}/deploy").status_code == 202
        waiting = {f"{name}.{stack.settings.apps_domain}" for name in names}
        done: list[float] = []
        while waiting and time.monotonic() - started < 300:
            for host in list(waiting):
                try:
                    page = httpx.get(stack.router_url, headers={"Host": host}, timeout=1)
                except httpx.HTTPError:
                    continue
                if page.status_code == 200:
                    waiting.discard(host)
                    done.append(time.monotonic() - started)
            time.sleep(0.02)
        return sorted(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    last: dict[int, float] = {}
    for workers in args.workers:
        times = serving_times(args.apps, workers)
        last[workers] = times[-1]
        shown = ", ".join(f"{t:.1f}" for t in times)
        print(f"{args.apps} deploys at once, {workers} worker(s): serving after {shown} s")
    base = args.workers[0]
    for workers in args.workers[1:]:
        print(f"last app serving: {workers} workers {last[workers] / last[base]:.2f}x {base}")


if __name__ == "__main__":
    main()
