"""Where things run, as the engine sees it: its nodes, and the node and port of each replica.

Read-only, for operators (`GET /cluster/nodes`, `GET /apps/{id}/replicas`). A plain engine is
one node, this host; in swarm mode (RUNTIME=swarm on a swarm manager) the nodes are the swarm's
and each replica is a one-task service whose task runs on one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import docker

from minipaas.runtime import labels
from minipaas.runtime.base import LOOPBACK
from minipaas.runtime.engine_errors import as_runtime_failure

STANDALONE = "standalone"


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    address: str  # where the node's published ports answer (Status.Addr in swarm mode)
    role: str  # manager, worker; "standalone" for a plain engine
    availability: str  # active, pause, drain
    state: str  # ready, down, unknown, disconnected
    leader: bool
    engine_version: str


@dataclass(frozen=True)
class Placement:
    replica: int | None  # None: a container without the replica label
    deployment_id: int | None
    ref: str  # the container's id, or the service's in swarm mode
    name: str
    node_id: str | None  # None: no task scheduled (yet)
    node_hostname: str | None
    node_address: str | None
    state: str  # the container's state, or the task's (running, pending, shutdown, ...)
    published_port: int | None


def swarm_active(client: docker.DockerClient) -> bool:
    """The engine is part of an active swarm (a manager or a worker)."""
    with as_runtime_failure("asking the engine for its mode"):
        info: dict[str, Any] = client.info()
    return (info.get("Swarm") or {}).get("LocalNodeState") == "active"


def nodes(client: docker.DockerClient, *, swarm: bool) -> list[Node]:
    """The swarm's nodes when `swarm` (the platform runs on Swarm) and the engine is in swarm
    mode; else one node: this host."""
    if swarm and swarm_active(client):
        with as_runtime_failure("listing the swarm's nodes"):
            found: list[dict[str, Any]] = client.api.nodes()
        return sorted((_swarm_node(item) for item in found), key=lambda n: n.hostname)
    return [_this_host(client)]


def placements(
    client: docker.DockerClient,
    instance_name: str,
    app_id: int,
    *,
    swarm: bool,
    install_id: str | None = None,
) -> list[Placement]:
    """Every container (or service) of the app with where it runs, by replica then deployment;
    never those another install of the same INSTANCE_NAME made."""
    wanted = [f"{labels.INSTANCE}={instance_name}", f"{labels.APP_ID}={app_id}"]
    if swarm and swarm_active(client):
        found = _service_placements(client, wanted, install_id)
    else:
        found = _container_placements(client, wanted, install_id)
    return sorted(found, key=lambda p: (p.replica is None, p.replica or 0, p.deployment_id or 0))


def _this_host(client: docker.DockerClient) -> Node:
    with as_runtime_failure("asking the engine about this host"):
        info: dict[str, Any] = client.info()
    return Node(
        id=str(info.get("ID") or ""),
        hostname=str(info.get("Name") or ""),
        address=LOOPBACK,
        role=STANDALONE,
        availability="active",
        state="ready",
        leader=False,
        engine_version=str(info.get("ServerVersion") or ""),
    )


def node_address(node: dict[str, Any]) -> str:
    """A node's address; a manager some engines report as 0.0.0.0 has its advertised one."""
    address = str((node.get("Status") or {}).get("Addr") or "")
    manager = node.get("ManagerStatus") or {}
    if address in ("", "0.0.0.0") and manager.get("Addr"):
        address = str(manager["Addr"]).rsplit(":", 1)[0]
    return "" if address == "0.0.0.0" else address


def _swarm_node(item: dict[str, Any]) -> Node:
    spec = item.get("Spec") or {}
    status = item.get("Status") or {}
    manager = item.get("ManagerStatus") or {}
    description = item.get("Description") or {}
    address = node_address(item)
    return Node(
        id=str(item.get("ID") or ""),
        hostname=str(description.get("Hostname") or ""),
        address=address,
        role=str(spec.get("Role") or "unknown"),
        availability=str(spec.get("Availability") or "unknown"),
        state=str(status.get("State") or "unknown"),
        leader=bool(manager.get("Leader")),
        engine_version=str((description.get("Engine") or {}).get("EngineVersion") or ""),
    )


def _number(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _container_placements(
    client: docker.DockerClient, wanted: list[str], install_id: str | None
) -> list[Placement]:
    host = _this_host(client)
    with as_runtime_failure("listing containers"):
        found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": wanted})
    placed = []
    for item in found:
        stamped = dict(item.get("Labels") or {})
        if labels.made_by_another_install(stamped, install_id):
            continue
        placed.append(
            Placement(
                replica=_number(stamped.get(labels.REPLICA)),
                deployment_id=_number(stamped.get(labels.DEPLOYMENT_ID)),
                ref=str(item["Id"]),
                name=str((item.get("Names") or [item["Id"][:12]])[0]).lstrip("/"),
                node_id=host.id,
                node_hostname=host.hostname,
                node_address=host.address,
                state=str(item.get("State") or "unknown"),
                published_port=_listed_port(item),
            )
        )
    return placed


def _service_placements(
    client: docker.DockerClient, wanted: list[str], install_id: str | None
) -> list[Placement]:
    with as_runtime_failure("listing the swarm's services and nodes"):
        services: list[dict[str, Any]] = client.api.services(filters={"label": wanted})
        by_id = {node.id: node for node in map(_swarm_node, client.api.nodes())}
        tasks: list[dict[str, Any]] = (
            client.api.tasks(filters={"service": [s["ID"] for s in services]}) if services else []
        )
    placed = []
    for service in services:
        spec = service.get("Spec") or {}
        stamped = dict(spec.get("Labels") or {})
        if labels.made_by_another_install(stamped, install_id):
            continue
        task = _current_task([t for t in tasks if t.get("ServiceID") == service["ID"]])
        status = (task or {}).get("Status") or {}
        node = by_id.get(str((task or {}).get("NodeID") or ""))
        placed.append(
            Placement(
                replica=_number(stamped.get(labels.REPLICA)),
                deployment_id=_number(stamped.get(labels.DEPLOYMENT_ID)),
                ref=str(service["ID"]),
                name=str(spec.get("Name") or service["ID"]),
                node_id=node.id if node else None,
                node_hostname=node.hostname if node else None,
                node_address=node.address if node else None,
                state=str(status.get("State") or "no task"),
                published_port=_task_host_port(status),
            )
        )
    return placed


def _current_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The task meant to run now, else the newest: a one-replica service keeps the tasks it
    replaced (shut down) for a while."""

    def key(task: dict[str, Any]) -> tuple[bool, int]:
        version = int((task.get("Version") or {}).get("Index") or 0)
        return task.get("DesiredState") == "running", version

    return max(tasks, key=key, default=None)


def _listed_port(summary: dict[str, Any]) -> int | None:
    """The host port of a container list entry (a plain engine publishes on loopback)."""
    for port in summary.get("Ports") or []:
        if port.get("PublicPort"):
            return int(port["PublicPort"])
    return None


def _task_host_port(status: dict[str, Any]) -> int | None:
    """The port published in host mode on the task's node (a swarm picks it when none is
    asked for)."""
    for port in (status.get("PortStatus") or {}).get("Ports") or []:
        if port.get("PublishMode") == "host" and port.get("PublishedPort"):
            return int(port["PublishedPort"])
    return None
