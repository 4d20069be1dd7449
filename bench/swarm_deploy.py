"""Deploy latency on Docker Swarm (RUNTIME=swarm), next to its floors, in one run.

Starts a throw-away platform with RUNTIME=swarm (a one-node swarm on 127.0.0.1, the
embedded registry), then alternates, `--repeats` times after a warm-up:
1. the platform: POST /apps/{id}/deploy until the app answers 200 through the router by host;
2. the Swarm floor: `docker service create --publish mode=host,target=80 --restart-condition
   none --init <image>` (the image already local, no registry) until its port answers 200;
3. the one-host floor: `docker run -d -p 127.0.0.1::80 --init <image>` until it answers.
Prints medians and the ratios platform/Swarm floor (what the platform adds on Swarm: the
push to the registry, its pipeline, the router) and Swarm floor/docker run (what Swarm adds).
Not a pass/fail test: it exits 0 whatever the figures (CI machines are noisy).

Usage: .venv/bin/python bench/swarm_deploy.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import httpx  # noqa: E402
from bench.deploy_and_route import Floor, Platform, fmt_s, wait_for_200  # noqa: E402
from tests.support.images import HELLO_V1  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402

BENCH_LABEL = "io.minipaas.bench"


class SwarmFloor:
    """A bare one-task service in host mode, as the platform makes, without the platform."""

    def __init__(self, image: str) -> None:
        self.client = docker.from_env(timeout=60)
        self.image = image
        self.run_label = secrets.token_hex(4)

    def run(self, *, interval: float, timeout: float) -> float:
        start = time.monotonic()
        service = self.client.api.create_service(
            docker.types.TaskTemplate(
                docker.types.ContainerSpec(self.image, init=True),
                restart_policy=docker.types.RestartPolicy(condition="none"),
            ),
            name=f"bench-{secrets.token_hex(4)}",
            labels={BENCH_LABEL: self.run_label},
            endpoint_spec={"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "host"}]},
        )
        try:
            port = self._port(service["ID"], timeout)
            answered = wait_for_200(port, {"/": ("/", None)}, interval=interval, timeout=timeout)
        finally:
            self.client.api.remove_service(service["ID"])
        return answered["/"] - start

    def _port(self, service_id: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for task in self.client.api.tasks(filters={"service": service_id}):
                ports = (task.get("Status", {}).get("PortStatus") or {}).get("Ports") or []
                if task["Status"]["State"] == "running" and ports:
                    return int(ports[0]["PublishedPort"])
            time.sleep(0.02)
        raise TimeoutError("the bare service's task never ran")

    def cleanup(self) -> None:
        for service in self.client.services.list(
            filters={"label": f"{BENCH_LABEL}={self.run_label}"}
        ):
            with contextlib.suppress(Exception):
                service.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()

    os.environ["RUNTIME"] = "swarm"
    with running_stack(prefix="minipaas-bench-swarm-") as stack:
        api = httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=60)
        platform = Platform(stack, api, HELLO_V1)
        swarm, plain = SwarmFloor(HELLO_V1), Floor(HELLO_V1)
        ours: list[float] = []
        bare_service: list[float] = []
        bare_run: list[float] = []
        try:
            for index in range(args.warmup + args.repeats):
                app = platform.create()
                sample = platform.deploy(app, interval=args.poll_interval, timeout=args.timeout)
                platform.delete(app.id)
                service = swarm.run(interval=args.poll_interval, timeout=args.timeout)
                run = plain.run(interval=args.poll_interval, timeout=args.timeout).seconds
                warm = index < args.warmup
                tag = "warm-up" if warm else f"run {index - args.warmup + 1}"
                print(
                    f"  {tag:<8} platform on swarm {fmt_s(sample.seconds)}   bare service "
                    f"{fmt_s(service)}   docker run {fmt_s(run)}",
                    flush=True,
                )
                if not warm:
                    ours.append(sample.seconds)
                    bare_service.append(service)
                    bare_run.append(run)
        finally:
            platform.delete_all()
            swarm.cleanup()
            plain.cleanup()
    p, s, r = (statistics.median(v) for v in (ours, bare_service, bare_run))
    print(
        f"\nmedian of {args.repeats}: platform on swarm {fmt_s(p)}, bare one-task service "
        f"{fmt_s(s)}, docker run {fmt_s(r)}"
    )
    print(f"platform / bare service: {p / s:.2f}x   (what the platform adds on Swarm)")
    print(f"bare service / docker run: {s / r:.2f}x   (what Swarm adds)")
    print(f"platform on swarm / docker run: {p / r:.2f}x")


if __name__ == "__main__":
    main()
