"""Build-and-deploy time of a small FROM scratch context: the platform next to `docker build`
+ `docker run` of the same context, measured in the same run.

Starts a throw-away platform (the tests' `running_stack()`), then for each round builds a
context of the host's static busybox and a page (a new page each time, so the step that
copies it is never cached, as after a code change) and measures until the page is served:
- platform: upload (POST /apps/{id}/builds) -> build -> health-gated deploy -> the router
  answers the new page;
- docker: `docker build` (classic builder, as the platform uses) of the same tar ->
  `docker run -p 127.0.0.1::80` -> the container answers the page.
Goal: the platform within 1.3x of docker alone (median of the rounds). Loopback only.

Usage: .venv/bin/python bench/build_deploy.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.builds import scratch_context, start_build, tar_bytes
from tests.support.flows import create_app
from tests.support.images import HELLO_V1
from tests.support.stack import Stack, running_stack

GOAL = 1.3


def _served(url: str, page: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=1).text == page
    except httpx.HTTPError:
        return False


def _until(check: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.02)


def platform_round(stack: Stack, api: httpx.Client, app_id: int, page: str) -> float:
    body = tar_bytes(scratch_context(page))
    began = time.monotonic()
    answer = start_build(api, app_id, body)
    if answer.status_code != 202:
        raise SystemExit(f"build refused: {answer.text}")
    url = f"{stack.router_url}/apps/{app_id}/"
    _until(lambda: _served(url, page))
    took = time.monotonic() - began
    number = answer.json()["number"]
    build = api.get(f"/apps/{app_id}/builds/{number}").json()
    if build["status"] != "succeeded":
        raise SystemExit(f"build {number}: {build['status']} {build['error']}")
    return took


def docker_round(page: str, tag: str) -> float:
    body = tar_bytes(scratch_context(page))
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    while True:
        began = time.monotonic()
        built = subprocess.run(
            ["docker", "build", "-q", "-t", tag, "-"], input=body, capture_output=True, env=env
        )
        # The classic builder fails when an image it compares for its cache is removed
        # meanwhile (the platform's image GC runs between its own builds): timed again
        if built.returncode == 0 or b"unable to find image" not in built.stderr:
            break
        print("  (docker build met an image being removed: round timed again)")
    built.check_returncode()
    container = subprocess.run(
        ["docker", "run", "-d", "--init", "-p", "127.0.0.1::80", tag],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        port = (
            subprocess.run(
                ["docker", "port", container, "80/tcp"], check=True, capture_output=True, text=True
            )
            .stdout.split(":")[-1]
            .strip()
        )
        _until(lambda: _served(f"http://127.0.0.1:{port}/", page))
        return time.monotonic() - began
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with running_stack(prefix="minipaas-bench-") as stack:
        api = httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=60)
        app_id = create_app(api, f"bench-build-{secrets.token_hex(3)}", HELLO_V1)["id"]
        platform_round(stack, api, app_id, f"warm-up {secrets.token_hex(8)}\n")
        docker_round(f"warm-up {secrets.token_hex(8)}\n", "minipaas-bench/build:warm")
        platform, docker = [], []
        for number in range(args.rounds):
            # Alternating, so a busy moment of the machine hits both sides alike
            platform.append(
                platform_round(stack, api, app_id, f"p{number} {secrets.token_hex(8)}\n")
            )
            docker.append(
                docker_round(
                    f"d{number} {secrets.token_hex(8)}\n", f"minipaas-bench/build:{number}"
                )
            )
        p, d = statistics.median(platform), statistics.median(docker)
        print(
            "build-and-deploy of a FROM scratch context (busybox + a page), median of", args.rounds
        )
        print(
            f"  platform (upload, build, health-gated deploy, routed): {p:.2f} s  {_list(platform)}"
        )
        print(f"  docker build + docker run (until it answers):         {d:.2f} s  {_list(docker)}")
        ratio = p / d
        print(f"  ratio: {ratio:.2f}x (goal <= {GOAL}x) {'ok' if ratio <= GOAL else 'OVER'}")


def _list(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


if __name__ == "__main__":
    main()
