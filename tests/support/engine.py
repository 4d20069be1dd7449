"""What the tests ask of the engine under the platform, on one host or on Swarm alike.

A replica's ref is a container id on the plain engine and a service id on Swarm (RUNTIME=swarm,
make test's second pass); tests that act on the process itself (kill, pause, inspect) reach it
through `local_container`, the task's container on this one-node swarm.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import docker
from docker.errors import NotFound
from docker.models.containers import Container

from minipaas.config import Settings
from minipaas.runtime import get_runtime, labels
from minipaas.runtime.busybox_image import HTTPD, build_busybox_image
from minipaas.runtime.docker_runtime import DockerRuntime
from tests.support.waiting import eventually


def replica_refs(app_id: int) -> dict[str, str]:
    """{ref: replica label} of every replica of the app, running or not: one list call."""
    return {
        ref: found.get(labels.REPLICA, "?")
        for ref, found, _ in get_runtime().platform_containers()
        if labels.app_id_of(found) == app_id
    }


def local_container(ref: str) -> Container:
    """The container behind a replica's ref: itself, or its service's newest task's."""
    client = docker.from_env()
    try:
        return client.containers.get(ref)
    except NotFound:
        pass

    def task_container() -> str | None:
        tasks: list[dict[str, Any]] = client.api.tasks(filters={"service": ref})
        for task in sorted(tasks, key=lambda t: str(t.get("CreatedAt")), reverse=True):
            status = task.get("Status") or {}
            found = (status.get("ContainerStatus") or {}).get("ContainerID")
            return str(found) if found else None
        return None

    container_id = eventually(task_container, timeout=20, message=f"no container for {ref}")
    return client.containers.get(container_id)


def remove_by_hand(ref: str) -> None:
    """What an operator's `docker rm -f` is on one host: `docker service rm` on Swarm."""
    client = docker.from_env()
    try:
        client.containers.get(ref).remove(force=True)
    except NotFound:
        client.api.remove_service(ref)


def containers_whose_command_holds(fragment: str) -> list[str]:
    """Ids of the engine's containers, any state, whose command line holds `fragment`: one
    list call, no inspect per container (another test session's container may be removed
    between a list and its inspect)."""
    listed: list[dict[str, Any]] = docker.from_env().api.containers(all=True)
    return [str(found["Id"]) for found in listed if fragment in str(found.get("Command") or "")]


@contextmanager
def throwaway_runtime(
    data_dir: Path, image: str, page: str, **settings: Any
) -> Iterator[DockerRuntime]:
    """A runtime of a throw-away INSTANCE_NAME with `image` (busybox httpd serving `page`)
    built; everything it made is removed afterwards."""
    instance = f"mpt{secrets.token_hex(3)}"
    made = DockerRuntime(
        Settings(data_dir=data_dir, instance_name=instance, app_disk_mb=0, **settings)
    )
    build_busybox_image(made, image, HTTPD, {"index.html": page})
    try:
        yield made
    finally:
        for container_id in made.platform_container_ids():
            made.remove(container_id)
        with suppress(Exception):
            made.remove_apps_network()
