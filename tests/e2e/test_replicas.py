"""Replicas for real: N busybox containers behind nginx's Lua balancer, deployed, killed,
scaled and logged through the platform. Each test prints the figures it measures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from minipaas.host.platform import processes
from minipaas.services.replica_health import HUNG_RESTART_SECONDS
from tests.support.engine import local_container, remove_by_hand, replica_refs
from tests.support.flows import create_app, deploy, wait_for_deployment
from tests.support.images import BINARY_LOGGER, CRASHER, HELLO_V1, HELLO_V2, SLOW_STARTER
from tests.support.stack import Stack
from tests.support.users import new_member
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]

# What the router answers when no backend did; an app's own answers (busybox's 501 to a
# POST, say) are answers, not failures
ROUTER_FAILURES = {502, 503, 504}


def replica_containers(stack: Stack, app_id: int) -> dict[str, str]:
    """{ref: replica label} of every replica of the app, running or not."""
    return replica_refs(app_id)


def serving_replicas(api: httpx.Client, app_id: int) -> int:
    return int(api.get(f"/apps/{app_id}").json()["replicas_serving"])


class Load:
    """Clients sending requests through the router until stopped, counting outcomes."""

    def __init__(self, url: str, host: str) -> None:
        self.url, self.host = url, host
        self.outcomes: Counter[str] = Counter()
        # (method, sent, ended, outcome) of each request that failed, on the monotonic clock
        self.failures: list[tuple[str, float, float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _record(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _record_failure(self, method: str, sent: float, outcome: str) -> None:
        with self._lock:
            self.outcomes[f"{method} failed: {outcome}"] += 1
            self.failures.append((method, sent, time.monotonic(), outcome))

    def _run(self, method: str, fresh: bool) -> None:
        headers = {"Host": self.host}
        if fresh:
            headers["Connection"] = "close"
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.request(method, self.url, headers=headers)
                except httpx.HTTPError as exc:
                    self._record_failure(method, sent, type(exc).__name__)
                    continue
                if response.status_code in ROUTER_FAILURES:
                    self._record_failure(method, sent, str(response.status_code))
                else:
                    self._record(f"{method} {response.status_code}")
                time.sleep(0.005)

    def start(self, *, getters: int = 3, posters: int = 0) -> None:
        for index in range(getters):
            # Keep-alive and one connection per request, half each
            self._threads.append(threading.Thread(target=self._run, args=("GET", index % 2 == 0)))
        for _ in range(posters):
            self._threads.append(threading.Thread(target=self._run, args=("POST", False)))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def failed(self, method: str) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith(f"{method} failed"))

    def cut_off_by(self, method: str, kill_sent: float, killed: float) -> int:
        """Requests whose response a SIGKILL cut off mid-way: in flight when the kill was sent,
        ended as a broken response. No proxy can retry those once the response's head has gone
        to the client (nginx retries only before that), so they are the kill's cost."""
        return sum(
            1
            for failed_method, sent, ended, outcome in self.failures
            if failed_method == method
            and sent <= killed
            and ended >= kill_sent
            and outcome == "RemoteProtocolError"
        )

    def served(self, method: str) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith(f"{method} ")) - (
            self.failed(method)
        )


@contextmanager
def load(stack: Stack, app_name: str, *, getters: int = 3, posters: int = 0) -> Iterator[Load]:
    host = f"{app_name}.{stack.settings.apps_domain}"
    running = Load(f"{stack.router_url}/", host)
    running.start(getters=getters, posters=posters)
    try:
        yield running
    finally:
        running.stop()


def deployed_app(api: httpx.Client, name: str, image: str, replicas: int) -> dict[str, Any]:
    app_id = create_app(api, name, image, replicas=replicas)["id"]
    deployment = deploy(api, app_id)
    assert deployment["status"] == "succeeded", deployment.get("error")
    return dict(api.get(f"/apps/{app_id}").json())


def test_three_replicas_deploy_serve_and_redeploy_under_load_without_a_failure(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app = deployed_app(api, app_name, HELLO_V1, 3)
    app_id = app["id"]
    assert app["replicas"] == 3 and app["replicas_serving"] == 3
    assert sorted(replica_containers(stack, app_id).values()) == ["0", "1", "2"]

    with load(stack, app_name, getters=4) as running:
        for image in (HELLO_V2, HELLO_V1):
            assert api.patch(f"/apps/{app_id}", json={"image": image}).status_code == 200
            started = time.monotonic()
            assert deploy(api, app_id)["status"] == "succeeded"
            print(f"\nredeploy of 3 replicas: {time.monotonic() - started:.2f} s")
            time.sleep(0.5)
    print(f"requests during 2 redeploys of 3 replicas: {dict(running.outcomes)}")
    assert running.failed("GET") == 0
    assert running.served("GET") > 100
    # The old set is gone: three containers, of the last deployment
    assert sorted(replica_containers(stack, app_id).values()) == ["0", "1", "2"]
    assert len(api.get(f"/apps/{app_id}/releases").json()) == 3


@pytest.mark.parametrize("replica", ["1", "0"])
def test_a_killed_replica_fails_only_responses_it_cut_off_and_rejoins(
    stack: Stack, api: httpx.Client, app_name: str, replica: str
) -> None:
    """No GET sent to the app fails because a replica died: nginx retries one the dead replica
    refused on another. Only a response the kill cut off mid-way (at most one per client, and
    rare: busybox answers in microseconds) cannot be retried by any proxy."""
    app_id = deployed_app(api, app_name, HELLO_V1, 3)["id"]
    victim = next(
        cid for cid, label in replica_containers(stack, app_id).items() if label == replica
    )
    getters = 3

    with load(stack, app_name, getters=getters, posters=1) as running:
        time.sleep(1.0)
        kill_sent = time.monotonic()
        local_container(victim).kill()
        killed = time.monotonic()
        eventually(
            lambda: serving_replicas(api, app_id) == 2,
            timeout=10,
            interval=0.05,
            message="the dead replica stayed in the route",
        )
        out_after = time.monotonic() - killed
        eventually(
            lambda: serving_replicas(api, app_id) == 3,
            timeout=30,
            interval=0.1,
            message="the killed replica did not rejoin",
        )
        back_after = time.monotonic() - killed
        time.sleep(1.0)
    print(
        f"\ndocker kill of replica {replica}: out of the route after {out_after:.2f} s, back after "
        f"{back_after:.2f} s; requests meanwhile: {dict(running.outcomes)}"
    )
    assert out_after < 5
    cut_off = running.cut_off_by("GET", kill_sent, killed)
    assert cut_off <= getters
    assert running.failed("GET") - cut_off == 0, running.failures
    assert running.failed("POST") <= 1
    assert running.served("GET") > 50
    assert local_container(victim).status == "running"  # restarted, same one
    assert api.get(f"/apps/{app_id}").json()["status"] == "running"


def test_a_failed_deploy_of_three_replicas_leaves_no_container_and_the_old_set_serving(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = deployed_app(api, app_name, HELLO_V1, 3)["id"]
    old_set = replica_containers(stack, app_id)
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}

    # Every new replica crashes
    assert api.patch(f"/apps/{app_id}", json={"image": CRASHER}).status_code == 200
    failed = deploy(api, app_id)
    assert failed["status"] == "failed" and "replica" in failed["error"], failed["error"]
    assert "crashing on purpose" in failed["error"]

    # One new replica of three dies while they wait for their health check
    assert api.patch(f"/apps/{app_id}", json={"image": SLOW_STARTER}).status_code == 200
    response = api.post(f"/apps/{app_id}/deploy")
    assert response.status_code == 202
    deployment_id = response.json()["id"]

    def new_replica_2() -> str | None:
        for cid, label in replica_containers(stack, app_id).items():
            if label == "2" and cid not in old_set:
                return cid
        return None

    doomed = eventually(new_replica_2, timeout=20, message="replica 2 never started")
    local_container(doomed).kill()
    killed = time.monotonic()
    failed = eventually(
        lambda: (
            d
            if (d := api.get(f"/apps/{app_id}/deployments/{deployment_id}").json())["status"]
            in ("failed", "succeeded")
            else None
        ),
        timeout=30,
        message="the deployment did not end",
    )
    assert failed["status"] == "failed" and failed["error"].startswith("replica 2:"), failed
    print(f"\nreplica 2 killed while starting: failed {time.monotonic() - killed:.2f} s later")

    left = replica_containers(stack, app_id)
    print(f"\nafter 2 failed deploys of 3 replicas: containers {sorted(left.values())}")
    assert left == old_set  # 0 strays: exactly the old set
    app = api.get(f"/apps/{app_id}").json()
    assert app["status"] == "running" and app["replicas_serving"] == 3
    assert {router.get("/", headers=host).text for _ in range(6)} == {"hello from v1\n"}


def test_scaling_1_3_1_starts_and_stops_replicas_without_a_release(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = deployed_app(api, app_name, HELLO_V1, 1)["id"]
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}
    # A setting changed since the deploy is not what new replicas run: they run the release
    assert api.patch(f"/apps/{app_id}", json={"image": HELLO_V2}).status_code == 200

    with load(stack, app_name, getters=2) as running:
        for wanted in (3, 1):
            started = time.monotonic()
            changed = api.patch(f"/apps/{app_id}", json={"replicas": wanted})
            assert changed.status_code == 200, changed.text
            assert changed.json()["replicas"] == wanted
            assert "scaling" in (changed.json()["notice"] or "")
            eventually(
                lambda wanted=wanted: (  # type: ignore[misc]
                    serving_replicas(api, app_id) == wanted
                    and len(replica_containers(stack, app_id)) == wanted
                ),
                timeout=40,
                interval=0.1,
                message=f"the app did not scale to {wanted}",
            )
            print(f"\nscale to {wanted}: {time.monotonic() - started:.2f} s")
            # Every replica runs the release (v1), not the image set since (v2)
            bodies = {router.get("/", headers=host).text for _ in range(3 * wanted)}
            assert bodies == {"hello from v1\n"}
    print(f"requests while scaling 1 -> 3 -> 1: {dict(running.outcomes)}")
    assert running.failed("GET") == 0
    assert set(k for k in running.outcomes if k.startswith("GET")) == {"GET 200"}
    assert len(api.get(f"/apps/{app_id}/releases").json()) == 1  # scaling is no release

    def scales_done() -> list[str]:
        # the stopped replicas' removal may end after the route already left them
        actions = api.get(f"/apps/{app_id}/actions").json()[:2]
        assert [a["action"] for a in actions] == ["scale", "scale"]
        return [a["status"] for a in actions if a["status"] not in ("queued", "running")]

    statuses = eventually(
        lambda: (lambda done: done if len(done) == 2 else None)(scales_done()),
        timeout=20,
        message="the scale actions did not end",
    )
    assert statuses == ["succeeded", "succeeded"]


def test_logs_merge_the_replicas_and_name_each(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = deployed_app(api, app_name, BINARY_LOGGER, 2)["id"]
    logs = api.get(f"/apps/{app_id}/logs").json()["logs"]
    print(f"\nlogs of 2 replicas:\n{logs}")
    lines = logs.splitlines()
    assert any(line.startswith("[r0] before") for line in lines)
    assert any(line.startswith("[r1] before") for line in lines)
    stamped = api.get(f"/apps/{app_id}/logs", params={"timestamps": True, "tail": 1})
    assert len(stamped.json()["logs"].splitlines()) == 1
    assert " [r" in stamped.json()["logs"]

    with api.stream("GET", f"/apps/{app_id}/logs", params={"follow": True, "tail": 5}) as stream:
        seen: set[str] = set()
        for line in stream.iter_lines():
            seen.add(line[:5])
            if {"[r0] ", "[r1] "} <= seen:
                break
    assert {"[r0] ", "[r1] "} <= seen


def test_quotas_count_memory_times_replicas(stack: Stack, api: httpx.Client, app_name: str) -> None:
    member = new_member(api)
    quota = stack.settings.user_max_memory_mb  # 768
    with httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=60) as client:
        fits = client.post(
            "/apps",
            json={
                "name": app_name,
                "image": HELLO_V1,
                "internal_port": 80,
                "memory_mb": 256,
                "replicas": 3,
            },
        )
        assert fits.status_code == 201, fits.text  # 3 x 256 = 768: the quota exactly
        app_id = fits.json()["id"]
        more = client.patch(f"/apps/{app_id}", json={"replicas": 4})
        print(f"\n4 x 256 MB with a {quota} MB quota: {more.status_code} {more.json()}")
        assert more.status_code == 403
        assert f"1024 MB, the quota is {quota} MB" in more.json()["detail"]
        most = stack.settings.app_max_replicas
        too_many = client.patch(f"/apps/{app_id}", json={"replicas": most + 1})
        assert too_many.status_code == 422
        assert "APP_MAX_REPLICAS" in str(too_many.json()["detail"])
        assert client.patch(f"/apps/{app_id}", json={"replicas": 0}).status_code == 422
        assert client.patch(f"/apps/{app_id}", json={"replicas": None}).status_code == 422
        assert client.patch(f"/apps/{app_id}", json={"replicas": 2}).status_code == 200
        app = client.get(f"/apps/{app_id}").json()
        assert app["replicas"] == 2 and app["replicas_serving"] == 0  # not deployed yet


def test_cli_scale_and_show(stack: Stack, api: httpx.Client, app_name: str, tmp_path: Path) -> None:
    app_id = deployed_app(api, app_name, HELLO_V1, 1)["id"]

    def cli(*args: str) -> str:
        env = {
            **os.environ,
            "MINIPAAS_CONFIG": str(tmp_path / "config.json"),
            "MINIPAAS_URL": stack.api_url,
            "MINIPAAS_TOKEN": stack.env["ADMIN_TOKEN"],
            "COLUMNS": "200",
        }
        result = subprocess.run(
            [sys.executable, "-m", "minipaas", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    scaled = json.loads(cli("scale", app_name, "2", "--json"))
    assert scaled["replicas"] == 2 and scaled["replicas_serving"] == 2
    shown = cli("apps", "show", app_name)
    assert "replicas" in shown and "replicas_serving" in shown
    assert len(replica_containers(stack, app_id)) == 2
    stopped = json.loads(cli("stop", app_name, "--json"))
    assert stopped["status"] == "stopped" and stopped["replicas_serving"] == 0
    assert "next start or deploy" in cli("scale", app_name, "3")
    started = json.loads(cli("start", app_name, "--json"))
    assert started["status"] == "running"
    eventually(
        lambda: serving_replicas(api, app_id) == 3,
        timeout=30,
        message="the start did not bring the app to 3 replicas",
    )
    assert len(replica_containers(stack, app_id)) == 3


def test_worker_killed_mid_deploy_of_three_replicas_leaves_the_old_set_alone(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = deployed_app(api, app_name, HELLO_V1, 3)["id"]
    old_set = replica_containers(stack, app_id)
    assert api.patch(f"/apps/{app_id}", json={"image": SLOW_STARTER}).status_code == 200
    deployment_id = api.post(f"/apps/{app_id}/deploy").json()["id"]
    eventually(
        lambda: len(replica_containers(stack, app_id)) == 6,
        timeout=20,
        interval=0.1,
        message="the deploy did not start its 3 replicas",
    )
    worker = next(p for p in processes(stack.settings) if p.name == "worker")
    pid = worker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    ended = wait_for_deployment(api, app_id, deployment_id, timeout=40)
    assert ended["status"] == "failed" and "worker" in ended["error"]
    eventually(
        lambda: replica_containers(stack, app_id) == old_set,
        timeout=20,
        interval=0.2,
        message="containers of the killed deploy were left behind",
    )
    app = api.get(f"/apps/{app_id}").json()
    print(f"\nworker killed mid-deploy of 3 replicas: {app['replicas_serving']} old ones serve")
    assert app["status"] == "running" and app["replicas_serving"] == 3
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}
    assert {router.get("/", headers=host).text for _ in range(6)} == {"hello from v1\n"}


def test_replica_0_removed_by_hand_is_replaced_while_the_others_serve(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = deployed_app(api, app_name, HELLO_V1, 3)["id"]
    first = next(cid for cid, label in replica_containers(stack, app_id).items() if label == "0")

    with load(stack, app_name, getters=3) as running:
        time.sleep(0.5)
        kill_sent = time.monotonic()
        remove_by_hand(first)
        removed = time.monotonic()
        eventually(
            lambda: (
                len(replica_containers(stack, app_id)) == 3
                and first not in replica_containers(stack, app_id)
                and serving_replicas(api, app_id) == 3
            ),
            timeout=40,
            interval=0.2,
            message="the removed replica was not replaced",
        )
        replaced_after = time.monotonic() - removed
        time.sleep(0.5)
    app = api.get(f"/apps/{app_id}").json()
    print(
        f"\ndocker rm -f of replica 0: 3 serving again after {replaced_after:.2f} s; "
        f"requests meanwhile: {dict(running.outcomes)}"
    )
    assert app["status"] == "running" and "took its place" in app["status_detail"]
    # `docker rm -f` kills the replica: a response it was sending then is cut off, as with
    # a SIGKILL (CI saw one in 577); anything else (a 502, a refused request) fails the test
    cut_off = running.cut_off_by("GET", kill_sent, removed)
    assert cut_off <= 3  # one request in flight per client at most
    assert running.failed("GET") - cut_off == 0, running.failures


class TimedLoad:
    """GET clients through the router, each request's start, duration and outcome kept: a
    request sent to a frozen replica is one that fails (times out) while the others answer
    in milliseconds."""

    def __init__(self, url: str, host: str, *, timeout: float) -> None:
        self.url, self.host, self.timeout = url, host, timeout
        self.requests: list[tuple[float, float, bool]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(index % 2 == 0,)) for index in range(6)
        ]

    def _run(self, fresh: bool) -> None:
        headers = {"Host": self.host, **({"Connection": "close"} if fresh else {})}
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.get(self.url, headers=headers).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with self._lock:
                    self.requests.append((started, time.monotonic() - started, ok))
                time.sleep(0.005)

    def failed_since(self, at: float) -> list[float]:
        """Start times (after `at`) of the requests that failed."""
        with self._lock:
            return sorted(start for start, _, ok in self.requests if start >= at and not ok)

    def count_since(self, at: float) -> int:
        with self._lock:
            return sum(1 for start, _, _ in self.requests if start >= at)

    def __enter__(self) -> TimedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


@pytest.mark.parametrize("replica", ["1", "0"])
def test_a_frozen_replica_leaves_the_route_within_5_s_and_rejoins_when_it_answers(
    stack: Stack, api: httpx.Client, app_name: str, replica: str
) -> None:
    app_id = deployed_app(api, app_name, HELLO_V1, 3)["id"]
    victim_ref = next(
        ref for ref, label in replica_containers(stack, app_id).items() if label == replica
    )
    victim = local_container(victim_ref)
    host = f"{app_name}.{stack.settings.apps_domain}"

    # A healthy request takes milliseconds: one taking 2 s went to the frozen replica
    with TimedLoad(f"{stack.router_url}/", host, timeout=2.0) as running:
        time.sleep(1.0)
        victim.pause()  # accepts connections (Docker's proxy does), never answers
        paused = time.monotonic()
        eventually(
            lambda: serving_replicas(api, app_id) == 2,
            timeout=15,
            interval=0.05,
            message="the frozen replica stayed in the route",
        )
        out_after = time.monotonic() - paused
        total = int(api.get("/apps", params={"limit": 1}).headers["X-Total-Count"])
        newest = api.get("/apps", params={"limit": 50, "offset": max(total - 50, 0)}).json()
        listed = next(a for a in newest if a["id"] == app_id)
        assert listed["replicas_serving"] == 2  # the list page counts as the app's own page
        time.sleep(3.0)  # long enough for a request sent to it to have failed by now
        failed = running.failed_since(paused)
        last_sent_to_it = (failed[-1] - paused) if failed else 0.0
        after_out = running.count_since(paused + out_after)

        victim.unpause()
        unpaused = time.monotonic()
        eventually(
            lambda: serving_replicas(api, app_id) == 3,
            timeout=15,
            interval=0.05,
            message="the replica did not rejoin once it answered again",
        )
        back_after = time.monotonic() - unpaused
        time.sleep(1.0)
        failed_after_rejoin = running.failed_since(unpaused + back_after)
    app = api.get(f"/apps/{app_id}").json()
    print(
        f"\ndocker pause of replica {replica}: out of the route (app JSON) after "
        f"{out_after:.2f} s, last request sent to it {last_sent_to_it:.2f} s after the pause, "
        f"{len(failed)} requests failed (of {len(running.requests)}; {after_out} sent after "
        f"it left); docker unpause: back in the route after {back_after:.2f} s"
    )
    assert out_after < 5
    assert last_sent_to_it < 5
    assert failed_after_rejoin == []
    assert app["status"] == "running" and app["replicas_serving"] == 3
    # the same container, not replaced
    assert victim_ref in replica_containers(stack, app_id)
    assert local_container(victim_ref).id == victim.id


def test_a_replica_frozen_past_the_bound_is_restarted_and_rejoins(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = deployed_app(api, app_name, HELLO_V1, 3)["id"]
    victim_ref = next(
        ref for ref, label in replica_containers(stack, app_id).items() if label == "2"
    )
    local_container(victim_ref).pause()
    paused = time.monotonic()
    eventually(
        lambda: serving_replicas(api, app_id) == 2,
        timeout=15,
        interval=0.1,
        message="the frozen replica stayed in the route",
    )

    def restarted() -> bool:
        # the same container on one host; on Swarm a new task of the same service
        running = local_container(victim_ref).status == "running"  # "paused" while frozen
        return running and serving_replicas(api, app_id) == 3

    eventually(
        restarted,
        timeout=HUNG_RESTART_SECONDS + 30,
        interval=0.2,
        message="the frozen replica was not restarted",
    )
    back_after = time.monotonic() - paused
    print(f"\nreplica frozen for good: restarted and back in the route after {back_after:.1f} s")
    assert back_after >= HUNG_RESTART_SECONDS
    assert local_container(victim_ref).attrs["State"]["Paused"] is False
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}
    assert {router.get("/", headers=host).text for _ in range(6)} == {"hello from v1\n"}
    deployment_id = api.get(f"/apps/{app_id}").json()["current_deployment_id"]
    events = api.get(f"/apps/{app_id}/deployments/{deployment_id}/events").json()
    messages = [event["message"] for event in events]
    assert any("killed, the healer restarts it" in m for m in messages), messages
    assert any("out of the route" in m for m in messages), messages
