"""Containers are locked down whatever the request says; limits and isolation hold for real."""

from __future__ import annotations

import subprocess
from typing import Any

import docker
import httpx
import pytest

from minipaas.runtime.docker_runtime import DEFAULT_BRIDGE, ICC_OPTION
from tests.support.engine import local_container
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1, MEMORY_EATER
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]


def _inspect(container_id: str) -> dict[str, Any]:
    return dict(local_container(container_id).attrs)


def test_deployed_container_is_hardened_and_limited(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1, memory_mb=64, cpus=0.25, pids=50)["id"]
    deployment = deploy(api, app_id)
    assert deployment["status"] == "succeeded", deployment["error"]
    attrs = _inspect(deployment["container_id"])
    host = attrs["HostConfig"]
    assert isinstance(host, dict)
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert "SYS_ADMIN" not in host["CapAdd"] and "NET_RAW" not in host["CapAdd"]
    assert host["Memory"] == 64 * 2**20
    assert host["NanoCpus"] == 250_000_000
    assert host["PidsLimit"] == 50
    assert host["Init"] is True
    assert not host.get("Binds") and not host.get("Devices")
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "3", "max-size": "10m"},
    }
    labels = attrs["Config"]["Labels"]
    assert isinstance(labels, dict)
    assert labels["io.minipaas.instance"] == stack.settings.instance_name
    assert labels["io.minipaas.app-id"] == str(app_id)
    assert labels["io.minipaas.deployment-id"] == str(deployment["id"])
    if stack.settings.runtime == "swarm":
        _swarm_specifics(stack, app_id, deployment["container_id"], attrs)
    else:
        _one_host_specifics(stack, host)


def _one_host_specifics(stack: Stack, host: dict[str, Any]) -> None:
    # Swarm's service spec (API 1.41, Docker 20.10) has neither: README "Limits"
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["MemorySwap"] == 64 * 2**20
    # Docker's default bridge when the engine keeps containers on it apart, else the install's
    # own network (APPS_BRIDGE; tests/integration/test_apps_network.py tries both)
    assert host["NetworkMode"] in (stack.settings.apps_network, DEFAULT_BRIDGE)
    network = docker.from_env().networks.get(host["NetworkMode"])
    # apps on the network cannot talk to each other
    assert network.attrs["Options"][ICC_OPTION] == "false"
    # the platform restarts app containers (worker/healer.py), never Docker
    assert host["RestartPolicy"]["Name"] == "no"
    bindings = host["PortBindings"]["80/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]


def _swarm_specifics(stack: Stack, app_id: int, ref: str, attrs: dict[str, Any]) -> None:
    service = docker.from_env().api.inspect_service(ref)["Spec"]
    # the platform restarts replicas (worker/healer.py), never Swarm
    assert service["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    # an overlay network of the app's own: no overlay path between apps
    own = f"{stack.settings.apps_network}-app{app_id}"
    assert list(attrs["NetworkSettings"]["Networks"]) == [own]
    assert docker.from_env().networks.get(own).attrs["Driver"] == "overlay"
    assert service["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    assert service["Labels"]["io.minipaas.app-id"] == str(app_id)
    assert service["TaskTemplate"]["ContainerSpec"]["Image"].startswith(
        f"127.0.0.1:{stack.settings.registry_port}/"
    )  # run by digest from the cluster registry
    assert "@sha256:" in service["TaskTemplate"]["ContainerSpec"]["Image"]


def test_app_over_its_memory_limit_is_reported_as_oom(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, MEMORY_EATER, memory_mb=16)["id"]
    result = deploy(api, app_id)
    assert result["status"] == "failed"
    # "(OOM)" when Docker saw the OOM event; an app that overruns its limit in its first
    # instant can die before Docker watches for it, and is then said to be most likely OOM
    assert (
        "its limit of 16 MB (OOM)" in result["error"]
        or "most likely by the kernel's OOM killer at its memory limit of 16 MB" in result["error"]
    ), result["error"]
    assert api.get(f"/apps/{app_id}").json()["status"] == "failed"


def _listening_addresses(port: int) -> set[str]:
    output = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in output.splitlines() if line.strip()}


def _connect_command(port: int) -> list[str]:
    # busybox nc: exit 0 when the connection is made, non-zero when refused
    return ["/bin/sh", "-c", f"echo | nc -w 2 127.0.0.1 {port}"]


def test_apps_cannot_reach_the_platforms_postgres_redis_or_api(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    deployment = deploy(api, app_id)
    assert deployment["status"] == "succeeded", deployment["error"]
    container = local_container(deployment["container_id"])
    platform_ports = {
        "postgres": stack.settings.postgres_port,
        "redis": stack.settings.redis_port,
        "api": stack.settings.app_port,
    }
    for name, port in platform_ports.items():
        # The platform binds loopback only, so no address the container can route to answers
        assert _listening_addresses(port) == {"127.0.0.1"}, name
        # and the container's loopback is not the host's (it would be with host networking)
        exit_code, output = container.exec_run(_connect_command(port))
        assert exit_code != 0, (name, output)
    # the app's own port does answer from inside, so the probe itself works
    exit_code, output = container.exec_run(_connect_command(80))
    assert exit_code == 0, output
