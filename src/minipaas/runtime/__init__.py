"""Containers: everything that talks to the Docker engine (plain or Swarm) lives here."""

from minipaas.runtime import labels
from minipaas.runtime.base import (
    ContainerSpec,
    ContainerState,
    Endpoint,
    EngineUnavailable,
    ImageUnavailable,
    RuntimeFailure,
    StartedContainer,
)
from minipaas.runtime.docker_runtime import (
    DockerRuntime,
    container_name,
    platform_labels,
)
from minipaas.runtime.engine import get_runtime

__all__ = [
    "ContainerSpec",
    "ContainerState",
    "DockerRuntime",
    "Endpoint",
    "EngineUnavailable",
    "ImageUnavailable",
    "RuntimeFailure",
    "StartedContainer",
    "container_name",
    "get_runtime",
    "labels",
    "platform_labels",
]
