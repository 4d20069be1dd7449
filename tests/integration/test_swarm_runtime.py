"""The Swarm engine against a real one-node swarm (this engine, made a manager on loopback):
a replica is a one-task service published in host mode, hardened and limited as a container
is on one host, stopped by scaling to 0, started again with a new task, never restarted by
Swarm itself, and listed by this instance's labels only."""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from docker.models.containers import Container

from minipaas.config import Settings
from minipaas.runtime import labels, port_guard
from minipaas.runtime.base import APP_CAPABILITIES, ContainerSpec, RuntimeFailure
from minipaas.runtime.builder import BuildSpec, build_image, build_network
from minipaas.runtime.busybox_image import HTTPD, build_busybox_image
from minipaas.runtime.swarm_runtime import SwarmRuntime
from minipaas.worker import reconciler
from tests.support.builds import scratch_context, tar_bytes
from tests.support.engine import local_container
from tests.support.flows import create_app as register_app
from tests.support.stack import Stack, ensure_swarm_manager
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker]

IMAGE = "minipaas-test/swarm-runtime:v1"
CRASHING = "minipaas-test/swarm-runtime-crash:v1"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmRuntime]:
    ensure_swarm_manager()
    instance = f"mpt{secrets.token_hex(3)}"
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("swarm"),
        instance_name=instance,
        runtime="swarm",
        stop_grace_seconds=2,
    )
    made = SwarmRuntime(settings)
    build_busybox_image(made, IMAGE, HTTPD, {"index.html": "swarm\n"})
    build_busybox_image(made, CRASHING, ["/bin/busybox", "sh", "-c", "echo bye; exit 3"])
    try:
        yield made
    finally:
        # Each removal waits until its task's container is gone (~5 s): side by side
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(made.remove, made.platform_container_ids()))
        with suppress(Exception):
            made.remove_apps_network()


def spec(
    runtime: SwarmRuntime, replica: int = 0, image: str = IMAGE, app_id: int = 7
) -> ContainerSpec:
    instance = runtime._settings.instance_name
    suffix = f"{f'-r{replica}' if replica else ''}-{secrets.token_hex(2)}"
    return ContainerSpec(
        name=f"{instance}-app{app_id}-d1{suffix}",
        image=image,
        internal_port=80,
        labels=labels.container_labels(instance, app_id, 1, replica),
        memory_mb=64,
        cpus=0.25,
        pids=32,
    )


def answers(address: str, port: int) -> str:
    return httpx.get(f"http://{address}:{port}/", timeout=5).text


def test_a_replica_is_a_hardened_one_task_service_that_answers_on_its_node(
    runtime: SwarmRuntime,
) -> None:
    started = runtime.run_container(spec(runtime))
    try:
        assert answers(started.address, started.published_port) == "swarm\n"
        service = runtime.client.api.inspect_service(started.id)
        assert service["Spec"]["Labels"][labels.APP_ID] == "7"
        assert service["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
        assert service["Spec"]["Mode"]["Replicated"]["Replicas"] == 1

        container = local_container(started.id).attrs
        assert container["Config"]["Labels"][labels.REPLICA] == "0"  # on the task too
        host = container["HostConfig"]
        assert host["Memory"] == 64 * 2**20 and host["NanoCpus"] == int(0.25e9)
        assert host["PidsLimit"] == 32 and host["Init"] is True
        assert host["CapDrop"] == ["ALL"] and sorted(host["CapAdd"]) == sorted(APP_CAPABILITIES)
        # each app on its own overlay network: no overlay path between apps
        assert list(container["NetworkSettings"]["Networks"]) == [
            f"{runtime._settings.apps_network}-app7"
        ]
        assert runtime.running_endpoints()[started.id] == runtime.published_endpoint(started.id)
    finally:
        runtime.remove(started.id)
    assert runtime.state(started.id) is None


def test_stop_scales_to_zero_and_start_brings_a_new_task(runtime: SwarmRuntime) -> None:
    started = runtime.run_container(spec(runtime))
    first_container = local_container(started.id).id

    runtime.stop(started.id)
    stopped = runtime.state(started.id)
    assert stopped is not None and not stopped.running
    assert started.id not in runtime.running_endpoints()

    endpoint = runtime.start(started.id)
    assert answers(endpoint.address, endpoint.port) == "swarm\n"
    assert local_container(started.id).id != first_container
    state = runtime.state(started.id)
    assert state is not None and state.running


def test_a_killed_task_is_not_restarted_by_swarm_but_by_whoever_calls_start(
    runtime: SwarmRuntime,
) -> None:
    started = runtime.run_container(spec(runtime))
    runtime.kill(started.id)

    def ended() -> bool:
        state = runtime.state(started.id)
        assert state is not None and not state.running
        return state.exit_code == 137

    eventually(ended, timeout=15, retry_on=(AssertionError,), message="the kill was not seen")
    # Swarm leaves it ended (restart condition none): the platform's healer decides
    time.sleep(2)
    assert started.id not in runtime.running_endpoints()
    endpoint = runtime.start(started.id)
    assert answers(endpoint.address, endpoint.port) == "swarm\n"


def test_a_replica_that_exits_at_once_shows_its_exit_code_and_logs(
    runtime: SwarmRuntime,
) -> None:
    """Its task may be seen running for an instant (a host-mode port is published before the
    app listens): then it is the health gate that fails it, with this state and these logs."""
    wanted = spec(runtime, image=CRASHING)
    try:
        ref = runtime.run_container(wanted).id
    except RuntimeFailure as failed:
        assert "exit code 3" in str(failed) and "bye" in str(failed)
        assert runtime.state(wanted.name) is None  # nothing left behind
        return

    def exited() -> bool:
        state = runtime.state(ref)
        assert state is not None and not state.running
        return state.exit_code == 3

    eventually(exited, timeout=15, retry_on=(AssertionError,), message="never seen exited")
    assert "bye" in runtime.tail_logs(ref, 5)


def test_only_this_instances_services_are_listed(runtime: SwarmRuntime) -> None:
    mine = runtime.run_container(spec(runtime, replica=1))
    other = SwarmRuntime(
        runtime._settings.model_copy(update={"instance_name": f"mpt{secrets.token_hex(3)}"})
    )
    assert mine.id in runtime.platform_container_ids(app_id=7)
    assert mine.id not in other.platform_container_ids()
    assert runtime.platform_container_ids(app_id=8) == []
    logs_before = runtime.logs(mine.id, tail=None, timestamps=False)
    answers(mine.address, mine.published_port)
    eventually(
        lambda: len(runtime.logs(mine.id, tail=None, timestamps=False)) > len(logs_before),
        timeout=10,
        message="the request never reached the service's logs",
    )


def test_an_apps_container_cannot_reach_another_apps_host_port_but_the_host_can(
    runtime: SwarmRuntime,
) -> None:
    # The host's setup `make up` and each worker's start run (twice: it must be idempotent)
    runtime.ensure_apps_network()
    runtime.ensure_apps_network()
    a = runtime.run_container(spec(runtime, app_id=7))
    b = runtime.run_container(spec(runtime, app_id=8))
    try:
        # The router's position: the host itself, at B's node address
        assert answers(b.address, b.published_port) == "swarm\n"
        inside_a = local_container(a.id)
        # The node advertises 127.0.0.1 here, A's own loopback: A reaches its host at its
        # gateway instead (the host's docker_gwbridge address), as it would a node's address
        targets = {_gateway(inside_a)} | ({b.address} - {"127.0.0.1"})
        for target in sorted(targets):
            code, output = _fetch_inside(inside_a, f"http://{target}:{b.published_port}/")
            assert code != 0 and b"swarm" not in output, f"A reached B at {target}: {output!r}"
        jumps = subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True, text=True)
        assert jumps.stdout.splitlines().count(f"-A INPUT -j {port_guard.CHAIN}") == 1
    finally:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(runtime.remove, [a.id, b.id]))


def test_a_build_step_cannot_reach_an_apps_host_port(runtime: SwarmRuntime, tmp_path: Path) -> None:
    """A RUN step reaches its host through its build network's own bridge (`mpbuild-...`),
    which the host's chain rejects as it does the apps' bridges: no way past the router."""
    runtime.ensure_apps_network()  # installs the host's chain
    b = runtime.run_container(spec(runtime, app_id=8))
    marker = secrets.token_hex(6)
    gateway = "$(/bin/busybox ip route | /bin/busybox awk '/^default/ {print $3}')"
    ask = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 {gateway} {b.published_port}'
    run = f"if {ask} | grep -q swarm; then echo reached {marker}; else echo refused {marker}; fi"
    context = tmp_path / "context.tar"
    context.write_bytes(tar_bytes(scratch_context("x", run=run)))
    build = BuildSpec(
        context=context,
        tag=f"minipaas-test/step-to-app:{marker}",
        dockerfile="Dockerfile",
        build_args={},
        memory_mb=64,
        cpus=0.5,
        timeout_seconds=60,
    )
    lines: list[str] = []
    try:
        assert answers(b.address, b.published_port) == "swarm\n"  # the host reaches it
        with build_network(runtime, f"minipaas-test-build-{marker}") as network:
            result = build_image(
                runtime,
                build,
                network=network,
                on_lines=lines.extend,
                stop_reason=lambda: None,
            )
        assert result.image_id is not None, result.error
        output = [line for line in lines if not line.startswith("Step ")]
        said = [w for w in ("reached", "refused") if any(f"{w} {marker}" in x for x in output)]
        assert said == ["refused"], lines
    finally:
        runtime.remove(b.id)
        with suppress(Exception):
            runtime.client.images.remove(build.tag, force=True)


def _fetch_inside(container: Container, url: str) -> tuple[int, bytes]:
    # `timeout`, not wget's -T (the static busybox's wget crashes with it here)
    wget = ["/bin/busybox", "wget", "-q", "-O-", url]
    code, output = container.exec_run(["/bin/busybox", "timeout", "5", *wget])
    return int(code), bytes(output)


def _gateway(container: Container) -> str:
    """The container's default gateway: its host, on the bridge the container is on."""
    code, output = container.exec_run(["/bin/busybox", "ip", "route"])
    assert code == 0, output
    found = re.search(rb"^default via (\S+)", output, re.MULTILINE)
    assert found is not None, output
    return found.group(1).decode()


def test_the_reconciler_removes_the_networks_of_deleted_apps_only(
    runtime: SwarmRuntime,
    stack: Stack,
    api: httpx.Client,
    app_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A network left by a deleted app (a worker killed between the app's deletion and its
    network's) goes on the next pass; an existing app's stays, and so does one in use."""
    kept = register_app(api, app_name, IMAGE)["id"]
    deleted = 2_000_000_000 - secrets.randbelow(1000)  # no such app in the platform's database
    for app_id in (kept, deleted):
        runtime._create_app_network(runtime._app_network_name(app_id), app_id)
    running = runtime.run_container(spec(runtime, app_id=deleted + 1))  # no such app either
    monkeypatch.setattr(reconciler, "get_runtime", lambda: runtime)
    try:
        assert {kept, deleted, deleted + 1} <= set(runtime.app_network_ids())
        actions = reconciler._remove_networks_of_deleted_apps()
        assert f"removed the network of deleted app {deleted}" in actions
        left = runtime.app_network_ids()
        assert deleted not in left
        assert kept in left  # the app exists
        assert deleted + 1 in left  # in use by a service: tried again on a later pass
    finally:
        runtime.remove(running.id)
        for app_id in (kept, deleted + 1):
            runtime.remove_app_network(app_id)
    assert reconciler._remove_networks_of_deleted_apps() == []
