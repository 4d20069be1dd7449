"""Which network app containers join on one host, and that apps cannot reach each other on it.

APPS_BRIDGE=auto puts apps on Docker's default bridge when the engine keeps its containers
apart (`icc: false`, as scripts/ensure-docker.sh and install-deps.sh set up an engine of their
own), else on the install's own network; `own` always on the latter. Either way a container
cannot open a connection to another app's container, which the same probe between two
containers on a network with ICC on shows it would otherwise do."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from minipaas.config import Settings
from minipaas.runtime import labels
from minipaas.runtime.base import ContainerSpec
from minipaas.runtime.busybox_image import HTTPD, build_busybox_image
from minipaas.runtime.docker_runtime import DEFAULT_BRIDGE, ICC_OPTION, DockerRuntime
from tests.support.engine import throwaway_runtime

pytestmark = [pytest.mark.docker]

IMAGE = "minipaas-test/apps-network:v1"


def _engine_isolates_its_default_bridge() -> bool:
    options = docker.from_env().api.inspect_network(DEFAULT_BRIDGE)["Options"]
    return bool(options.get(ICC_OPTION) == "false")


@pytest.fixture(params=["auto", "own"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DockerRuntime]:
    with throwaway_runtime(tmp_path, IMAGE, "network\n", apps_bridge=request.param) as made:
        yield made


def _start(runtime: DockerRuntime, app_id: int) -> tuple[str, str]:
    """Starts an app's container; returns its id and its address on its network."""
    instance = runtime._settings.instance_name
    started = runtime.run_container(
        ContainerSpec(
            name=f"{instance}-app{app_id}-d1",
            image=IMAGE,
            internal_port=80,
            labels=labels.container_labels(instance, app_id, 1),
        )
    )
    networks = runtime.client.api.inspect_container(started.id)["NetworkSettings"]["Networks"]
    (attached,) = networks.values()
    return started.id, str(attached["IPAddress"])


def _connects(client: docker.DockerClient, container_id: str, address: str) -> bool:
    # busybox nc: exit 0 when the connection is made, non-zero when refused or timed out
    exit_code, _ = client.containers.get(container_id).exec_run(
        ["/bin/sh", "-c", f"echo | nc -w 2 {address} 80"]
    )
    return exit_code == 0


def test_apps_join_the_network_the_setting_and_the_engine_say(runtime: DockerRuntime) -> None:
    container_id, _ = _start(runtime, 1)
    mode = runtime.client.api.inspect_container(container_id)["HostConfig"]["NetworkMode"]
    own = runtime._settings.apps_network
    if runtime._settings.apps_bridge == "auto" and _engine_isolates_its_default_bridge():
        assert mode == DEFAULT_BRIDGE
        assert not runtime.client.networks.list(names=[own])  # nothing made that is not used
    else:
        assert mode == own
    joined = runtime.client.api.inspect_network(mode)
    assert joined["Options"][ICC_OPTION] == "false"


def test_an_app_cannot_open_a_connection_to_another_apps_container(
    runtime: DockerRuntime,
) -> None:
    first, first_address = _start(runtime, 1)
    second, second_address = _start(runtime, 2)

    assert _connects(runtime.client, first, first_address)  # the probe works: its own address
    assert not _connects(runtime.client, first, second_address)
    assert not _connects(runtime.client, second, first_address)
    # The host (the router's side) reaches both
    for address in (first_address, second_address):
        assert httpx.get(f"http://{address}/", timeout=5).text == "network\n"


def test_the_probe_would_see_a_network_that_lets_containers_talk(tmp_path: Path) -> None:
    client = docker.from_env()
    network = client.networks.create(f"mpt-icc-on-{secrets.token_hex(3)}", driver="bridge")
    made = DockerRuntime(Settings(data_dir=tmp_path, instance_name="mptprobe", app_disk_mb=0))
    build_busybox_image(made, IMAGE, HTTPD, {"index.html": "network\n"})
    started = [client.containers.run(IMAGE, detach=True, network=network.name) for _ in range(2)]
    try:
        addresses = []
        for container in started:
            container.reload()
            addresses.append(
                container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
            )
        assert _connects(client, started[0].id, addresses[1])
    finally:
        for container in started:
            container.remove(force=True)
        network.remove()
