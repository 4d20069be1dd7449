"""The runtime against the real engine: a leftover container holding a deployment's name is
replaced (create no longer removes the name first), and one list call reports every running
container's published port (the reconciler's batched pass relies on it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from minipaas.runtime import labels
from minipaas.runtime.base import ContainerSpec, Endpoint
from minipaas.runtime.docker_runtime import DockerRuntime
from tests.support.engine import throwaway_runtime

pytestmark = [pytest.mark.docker]

IMAGE = "minipaas-test/runtime-batch:v1"


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[DockerRuntime]:
    with throwaway_runtime(tmp_path, IMAGE, "batch\n") as made:
        yield made


def spec(runtime: DockerRuntime, name: str) -> ContainerSpec:
    instance = runtime._settings.instance_name
    return ContainerSpec(
        name=f"{instance}-{name}",
        image=IMAGE,
        internal_port=80,
        labels=labels.container_labels(instance, 1, 1),
    )


def test_a_leftover_container_with_the_deployments_name_is_replaced(
    runtime: DockerRuntime,
) -> None:
    wanted = spec(runtime, "app1-d1")
    leftover = runtime.client.containers.create(IMAGE, name=wanted.name, labels=wanted.labels)

    started = runtime.run_container(wanted)

    assert started.id != leftover.id
    assert runtime.state(leftover.id) is None
    state = runtime.state(started.id)
    assert state is not None and state.running


def test_one_list_call_gives_each_running_containers_port(runtime: DockerRuntime) -> None:
    first = runtime.run_container(spec(runtime, "app1-d1"))
    second = runtime.run_container(spec(runtime, "app1-d2"))
    runtime.stop(second.id)

    endpoints = runtime.running_endpoints()

    assert endpoints == {first.id: Endpoint("127.0.0.1", first.published_port)}
    assert endpoints[first.id] == runtime.published_endpoint(first.id) == first.endpoint


def test_a_frozen_container_counts_as_running_and_a_kill_ends_it(runtime: DockerRuntime) -> None:
    frozen = runtime.run_container(spec(runtime, "app1-d1"))
    runtime.client.api.pause(frozen.id)

    # Paused is no crash: the healer leaves it to the prober (worker/prober.py)
    assert runtime.running_endpoints() == {frozen.id: frozen.endpoint}

    runtime.kill(frozen.id)  # SIGKILL reaches a frozen container
    state = runtime.state(frozen.id)
    assert state is not None and not state.running
    runtime.kill(frozen.id)  # not running any more: nothing to do, no error
    assert runtime.start(frozen.id).port > 0  # the healer's restart works on it
