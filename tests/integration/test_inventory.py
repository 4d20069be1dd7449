"""runtime/inventory.py against the real engine: the nodes, and where each replica runs, from
labelled containers on the plain engine and from one-task services on Docker Swarm."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.types import EndpointSpec, RestartPolicy, ServiceMode

from minipaas.config import Settings
from minipaas.runtime import inventory
from minipaas.runtime.base import ContainerSpec
from minipaas.runtime.busybox_image import HTTPD, build_busybox_image
from minipaas.runtime.docker_runtime import DockerRuntime
from minipaas.runtime.swarm_runtime import HOST_PORTS, labels
from tests.support.engine import throwaway_runtime
from tests.support.stack import ensure_swarm_manager
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker]

IMAGE = "minipaas-test/inventory:v1"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[DockerRuntime]:
    with throwaway_runtime(tmp_path, IMAGE, "inventory\n") as made:
        yield made


def _instance(runtime: DockerRuntime) -> str:
    return runtime._settings.instance_name


def test_a_plain_engine_is_one_node_this_host(runtime: DockerRuntime) -> None:
    found = inventory.nodes(runtime.client, swarm=False)
    info = runtime.client.info()
    assert found == [
        inventory.Node(
            id=info["ID"],
            hostname=info["Name"],
            address="127.0.0.1",
            role="standalone",
            availability="active",
            state="ready",
            leader=False,
            engine_version=info["ServerVersion"],
        )
    ]
    # RUNTIME=swarm on an engine in swarm mode lists the swarm; on any other, this host
    if not inventory.swarm_active(runtime.client):
        assert inventory.nodes(runtime.client, swarm=True) == found


def test_plain_engine_placements_are_the_apps_labelled_containers(runtime: DockerRuntime) -> None:
    instance = _instance(runtime)
    started = {
        replica: runtime.run_container(
            ContainerSpec(
                name=f"{instance}-app7-d3" + (f"-r{replica}" if replica else ""),
                image=IMAGE,
                internal_port=80,
                labels=labels.container_labels(instance, 7, 3, replica),
            )
        )
        for replica in (1, 0)
    }
    other_app = runtime.run_container(
        ContainerSpec(
            name=f"{instance}-app8-d4",
            image=IMAGE,
            internal_port=80,
            labels=labels.container_labels(instance, 8, 4),
        )
    )
    runtime.stop(started[1].id)
    # The same INSTANCE_NAME, another install (its own DATA_DIR): its containers are its own
    foreign = DockerRuntime(runtime._settings, install_id=lambda: "f" * 32)
    theirs = foreign.run_container(
        ContainerSpec(
            name=f"{instance}-app7-d9",
            image=IMAGE,
            internal_port=80,
            labels=labels.container_labels(instance, 7, 9),
        )
    )
    try:
        found = inventory.placements(runtime.client, instance, 7, swarm=False, install_id="a" * 32)
        as_theirs = inventory.placements(
            runtime.client, instance, 7, swarm=False, install_id="f" * 32
        )
    finally:
        foreign.remove(theirs.id)

    host = runtime.client.info()["Name"]
    assert [(p.replica, p.deployment_id, p.ref) for p in found] == [
        (0, 3, started[0].id),
        (1, 3, started[1].id),
    ]
    assert found[0].state == "running" and found[0].published_port == started[0].published_port
    assert found[0].name == f"{instance}-app7-d3"
    assert (found[0].node_hostname, found[0].node_address) == (host, "127.0.0.1")
    assert found[1].state == "exited" and found[1].published_port is None
    assert other_app.id not in {p.ref for p in found}
    served = httpx.get(f"http://127.0.0.1:{found[0].published_port}/", timeout=10)
    assert served.text == "inventory\n"
    # The other install sees its own and the unstamped ones (made before install ids)
    assert {p.ref for p in as_theirs} == {theirs.id, started[0].id, started[1].id}


@pytest.fixture(scope="module")
def swarm_client() -> docker.DockerClient:
    """The engine as a swarm manager: a one-node swarm on loopback if it is in none (never
    left again: other tests and the platform may use it)."""
    ensure_swarm_manager()
    client = docker.from_env()
    info = client.info()["Swarm"]
    assert info["LocalNodeState"] == "active" and info["ControlAvailable"], info
    return client


class SwarmApp:
    """Replicas of app 7 (deployment 5) as SwarmRuntime runs them: one-task services, their
    port published in host mode (a port of the platform's range), never restarted by the swarm."""

    def __init__(self, client: docker.DockerClient, instance: str) -> None:
        self.client, self.instance = client, instance
        self.services: list[Any] = []

    def add(self, replica: int) -> str:
        stamped = labels.container_labels(self.instance, 7, 5, replica)
        service = self.client.services.create(
            IMAGE,
            name=f"{self.instance}-app7-d5" + (f"-r{replica}" if replica else ""),
            labels=stamped,
            container_labels=stamped,
            endpoint_spec=EndpointSpec(
                # a port of the range the platform publishes from (see swarm_runtime.py)
                ports=[
                    {
                        "Protocol": "tcp",
                        "TargetPort": 80,
                        "PublishedPort": secrets.choice(HOST_PORTS),
                        "PublishMode": "host",
                    }
                ]
            ),
            restart_policy=RestartPolicy(condition="none"),
            mode=ServiceMode("replicated", replicas=1),
        )
        self.services.append(service)
        return str(service.id)


@pytest.fixture
def swarm_app(swarm_client: docker.DockerClient, tmp_path: Path) -> Iterator[SwarmApp]:
    instance = f"mpt{secrets.token_hex(3)}"
    build_busybox_image(
        DockerRuntime(Settings(data_dir=tmp_path, instance_name=instance)),
        IMAGE,
        HTTPD,
        {"index.html": "swarm\n"},
    )
    made = SwarmApp(swarm_client, instance)
    try:
        yield made
    finally:
        for service in made.services:
            service.remove()


def _running(client: docker.DockerClient, instance: str) -> inventory.Placement | None:
    found = inventory.placements(client, instance, 7, swarm=True)
    return found[0] if found and found[0].state == "running" else None


def test_swarm_nodes_and_the_node_and_host_port_of_a_replicas_task(
    swarm_client: docker.DockerClient, swarm_app: SwarmApp
) -> None:
    service_id = swarm_app.add(0)
    instance = swarm_app.instance
    started = time.monotonic()
    placement = eventually(
        lambda: _running(swarm_client, instance), timeout=60, message="the task never ran"
    )
    print(f"\nswarm task running after {time.monotonic() - started:.2f} s")

    nodes = inventory.nodes(swarm_client, swarm=True)
    this = swarm_client.info()["Swarm"]["NodeID"]
    me = next(node for node in nodes if node.id == this)
    assert (me.role, me.leader, me.state, me.availability) == ("manager", True, "ready", "active")
    assert me.address == "127.0.0.1" and me.hostname == swarm_client.info()["Name"]
    assert me.engine_version == swarm_client.info()["ServerVersion"]

    assert placement.ref == service_id and placement.name == f"{instance}-app7-d5"
    assert (placement.replica, placement.deployment_id) == (0, 5)
    assert (placement.node_id, placement.node_hostname, placement.node_address) == (
        me.id,
        me.hostname,
        "127.0.0.1",
    )
    assert placement.published_port is not None
    served = httpx.get(f"http://127.0.0.1:{placement.published_port}/", timeout=10)
    assert served.text == "swarm\n"
    # The platform on the plain engine (RUNTIME=docker) looks at containers, not services
    plain = inventory.placements(swarm_client, instance, 7, swarm=False)
    assert [(p.replica, p.published_port) for p in plain] == [(0, placement.published_port)]
    assert inventory.nodes(swarm_client, swarm=False)[0].role == "standalone"


def test_a_swarm_task_that_stopped_shows_its_last_state(
    swarm_client: docker.DockerClient, swarm_app: SwarmApp
) -> None:
    swarm_app.add(0)
    instance = swarm_app.instance
    placement = eventually(
        lambda: _running(swarm_client, instance), timeout=60, message="the task never ran"
    )
    container = _task_container(swarm_client, instance)
    container.kill()

    def ended() -> inventory.Placement | None:
        found = inventory.placements(swarm_client, instance, 7, swarm=True)
        return found[0] if found and found[0].state != "running" else None

    stopped = eventually(ended, timeout=30, message="the task still runs")
    # Restart condition none: the swarm leaves it stopped (the platform's healer decides)
    assert stopped.state in ("failed", "shutdown", "complete"), stopped
    assert stopped.ref == placement.ref and stopped.node_id == placement.node_id


def test_each_replicas_port_is_its_own_tasks_ipv4_port(
    swarm_client: docker.DockerClient, swarm_app: SwarmApp
) -> None:
    """Swarm lists a host-mode port once per address family; on this engine the IPv6 one may
    differ and even be another task's IPv4 port: the router must get the IPv4 one."""
    for replica in range(3):
        swarm_app.add(replica)

    def all_running() -> list[inventory.Placement] | None:
        found = inventory.placements(swarm_client, swarm_app.instance, 7, swarm=True)
        return found if [p.state for p in found] == ["running"] * 3 else None

    placed = eventually(all_running, timeout=60, message="the tasks never ran")
    assert [p.replica for p in placed] == [0, 1, 2]
    for placement in placed:
        task = swarm_client.api.tasks(filters={"service": placement.ref})[0]
        container_id = task["Status"]["ContainerStatus"]["ContainerID"]
        bindings = swarm_client.api.inspect_container(container_id)["NetworkSettings"]["Ports"]
        ipv4 = [int(b["HostPort"]) for b in bindings["80/tcp"] if b["HostIp"] == "0.0.0.0"]
        assert placement.published_port == ipv4[0], (placement, bindings)
    assert len({p.published_port for p in placed}) == 3


def _task_container(client: docker.DockerClient, instance: str) -> Any:
    found = client.containers.list(filters={"label": f"{labels.INSTANCE}={instance}"})
    assert len(found) == 1, found
    return found[0]
