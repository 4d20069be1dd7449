"""Containers: everything that talks to the Docker engine lives here."""

from minipaas.runtime import labels
from minipaas.runtime.docker_runtime import (
    ContainerSpec,
    ContainerState,
    DockerRuntime,
    EngineUnavailable,
    ImageUnavailable,
    RuntimeFailure,
    StartedContainer,
    container_name,
    get_runtime,
    platform_labels,
)

__all__ = [
    "ContainerSpec",
    "ContainerState",
    "DockerRuntime",
    "EngineUnavailable",
    "ImageUnavailable",
    "RuntimeFailure",
    "StartedContainer",
    "container_name",
    "get_runtime",
    "labels",
    "platform_labels",
]
