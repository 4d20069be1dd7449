"""What the platform asks of an engine that runs app containers, and the values it trades.

Two engines implement `Runtime`: the plain Docker engine (docker_runtime.py, the default) and
Docker Swarm (swarm_runtime.py, `RUNTIME=swarm`). Nothing above this package knows which one
runs: a "container" is whatever the engine runs one replica in (a container, or a one-replica
Swarm service), named by the ref the engine gave it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from minipaas.runtime.listening import Listener

if TYPE_CHECKING:  # inventory.py talks to Docker; the interface only names its values
    from minipaas.runtime.inventory import Node, Placement


class RuntimeFailure(Exception):
    """A container operation failed; the message is meant for the app's owner."""


class ImageUnavailable(RuntimeFailure):
    pass


class EngineUnavailable(RuntimeFailure):
    pass


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    internal_port: int
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    memory_mb: int = 256
    cpus: float = 0.5
    pids: int = 256


# What most images need to start as root and drop to their own user; everything else is dropped
APP_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "NET_BIND_SERVICE"]


# What DockerRuntime publishes on: the host's loopback (a NULL address in the database)
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Endpoint:
    """Where a replica's published port answers: the node's address and the port."""

    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class StartedContainer:
    id: str
    name: str
    published_port: int
    # Where the published port answers: the node the replica runs on (loopback on one host)
    address: str = LOOPBACK

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.address, self.published_port)


@dataclass(frozen=True)
class InstanceObject:
    """A container or network of this INSTANCE_NAME, and the install that made it."""

    kind: str  # "container" or "network"
    name: str
    install_id: str | None  # None: made before install ids


@dataclass(frozen=True)
class ContainerState:
    status: str  # Docker's word: created, running, restarting, exited, dead, ...
    running: bool
    exit_code: int
    oom_killed: bool
    restart_count: int
    memory_limit_mb: int | None = None

    @property
    def perhaps_oom(self) -> bool:
        """Stopped by SIGKILL (137) under a memory limit, and Docker has not said OOM."""
        return (
            not self.running
            and self.exit_code == 137
            and not self.oom_killed
            and bool(self.memory_limit_mb)
        )

    def stop_reason(self, *, while_starting: bool = False) -> str:
        """Why it stopped, as the owner reads it: "exited", or an OOM kill said as such.

        Docker can miss the OOM event of an app that overruns its limit in its first instant
        (seen in CI: exit 137, OOMKilled false). A container that died `while_starting` (the
        deploy or a start waits for it: nothing of the platform kills it then) by SIGKILL
        under its memory limit is said to be most likely out of memory. Elsewhere a SIGKILL
        may be the platform's own (a hung replica) or an operator's, and reads as an exit."""
        limit = f"{self.memory_limit_mb} MB" if self.memory_limit_mb else "its"
        if self.oom_killed:
            return f"was killed for using more memory than its limit of {limit} (OOM)"
        if while_starting and self.perhaps_oom:
            return (
                "was killed (SIGKILL) while starting, most likely by the kernel's OOM killer at "
                f"its memory limit of {limit} (Docker recorded no OOM)"
            )
        return "exited"


class Runtime(Protocol):
    """The operations the services use; refs are the ids or names the engine gave."""

    def ping(self) -> None: ...
    def ensure_image(self, image: str, pull_policy: str) -> str: ...
    def image_id(self, reference: str) -> str | None: ...
    def images_in_use(self) -> set[str]: ...
    def remove_image(self, image_id: str) -> bool: ...
    def ensure_apps_network(self) -> str: ...
    def remove_apps_network(self) -> None: ...
    def remove_app_network(self, app_id: int) -> bool: ...
    def app_network_ids(self) -> list[int]: ...
    def nodes(self) -> list[Node]: ...
    def placements(self, app_id: int) -> list[Placement]: ...
    def run_container(self, spec: ContainerSpec) -> StartedContainer: ...
    def start(self, container_ref: str) -> Endpoint: ...
    def stop(self, container_ref: str) -> None: ...
    def kill(self, container_ref: str) -> None: ...
    def remove(self, container_ref: str) -> None: ...
    def disable_restarts(self, container_ref: str) -> None: ...
    def state(self, container_ref: str) -> ContainerState | None: ...
    def exit_state(self, container_ref: str) -> ContainerState | None: ...
    def published_endpoint(self, container_ref: str) -> Endpoint | None: ...
    def exposed_ports(self, container_ref: str) -> set[int]: ...
    def listening(self, container_ref: str) -> list[Listener] | None: ...
    def logs(
        self,
        container_ref: str,
        *,
        tail: int | None,
        timestamps: bool,
        since: datetime | None = None,
    ) -> str: ...
    def tail_logs(self, container_ref: str, lines: int) -> str: ...
    def running_container_ids(self) -> set[str]: ...
    def running_endpoints(self) -> dict[str, Endpoint | None]: ...
    def platform_containers(self) -> list[tuple[str, dict[str, str], str]]: ...
    def platform_container_ids(
        self, app_id: int | None = None, deployment_id: int | None = None
    ) -> list[str]: ...
    def instance_objects(self) -> list[InstanceObject]: ...
