"""Fairness: how much does a member's pile of slow deploys delay an admin's deploy?

One platform with 2 workers (DEPLOYS_PER_MEMBER: auto, 1). The admin deploys an app on the
idle platform (baseline), then a member asks for 5 deploys that each wait 300 s for health
(health_check_running_seconds), then the admin deploys again: POST until the first 200
through the router, both times. Loopback only.

Usage: .venv/bin/python bench/fairness.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import stack as test_stack
from tests.support.flows import create_app
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.users import new_member

SLOW_DEPLOYS = 5
HEALTH_WAIT_SECONDS = 300


def _deploy_until_serving(stack: test_stack.Stack, api: httpx.Client, app: dict[str, str]) -> float:
    host = f"{app['name']}.{stack.settings.apps_domain}"
    before = httpx.get(stack.router_url, headers={"Host": host}, timeout=5).text
    started = time.monotonic()
    assert api.post(f"/apps/{app['id']}/deploy").status_code == 202
    while time.monotonic() - started < 120:
        try:
            page = httpx.get(stack.router_url, headers={"Host": host}, timeout=1)
        except httpx.HTTPError:
            continue
        if page.status_code == 200 and page.text != before:
            return time.monotonic() - started
        time.sleep(0.01)
    raise RuntimeError("the admin's app did not come up within 120 s")


def _measure(stack: test_stack.Stack) -> tuple[float, float, list[int | None]]:
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=30) as api:
        admin_app = create_app(api, "fair-admin", HELLO_V1)
        idle = _deploy_until_serving(stack, api, admin_app)
        assert api.patch(f"/apps/{admin_app['id']}", json={"image": HELLO_V2}).status_code == 200
        member = new_member(api)
        with httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=30) as mine:
            slow = [
                create_app(
                    mine,
                    f"fair-slow-{n}",
                    HELLO_V1,
                    memory_mb=32,
                    health_check_running_seconds=HEALTH_WAIT_SECONDS,
                )["id"]
                for n in range(SLOW_DEPLOYS)
            ]
            asked = [mine.post(f"/apps/{app}/deploy").json() for app in slow]
            time.sleep(1)  # the first has a worker and is waiting for health
            loaded = _deploy_until_serving(stack, api, admin_app)
            for app, deployment in zip(slow, asked, strict=True):
                mine.post(f"/apps/{app}/deployments/{deployment['id']}/cancel")
        return idle, loaded, [d["queue_position"] for d in asked]


def main() -> None:
    plain_env = test_stack.stack_env

    def env(data_dir: Path) -> dict[str, str]:
        return {
            **plain_env(data_dir),
            "WORKER_PROCESSES": "2",
            "READY_TIMEOUT_SECONDS": str(HEALTH_WAIT_SECONDS + 30),
            "USER_MAX_APPS": "10",
            "USER_MAX_MEMORY_MB": "1024",
        }

    test_stack.stack_env = env  # type: ignore[assignment]
    try:
        with test_stack.running_stack(prefix="minipaas-bench-fair-") as stack:
            idle, loaded, positions = _measure(stack)
    finally:
        test_stack.stack_env = plain_env  # type: ignore[assignment]
    print(f"member's {SLOW_DEPLOYS} deploys waiting {HEALTH_WAIT_SECONDS} s for health: ")
    print(f"  their queue positions when asked: {positions}")
    print(f"admin deploy, idle platform: serving after {idle:.2f} s")
    print(f"admin deploy, member's deploys pending: serving after {loaded:.2f} s")
    print(f"delay caused: {loaded - idle:+.2f} s (goal: under 1 s); ratio {loaded / idle:.2f}x")


if __name__ == "__main__":
    main()
