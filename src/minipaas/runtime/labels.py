"""The labels the platform puts on what it creates in Docker, and how to read them back."""

from __future__ import annotations

PLATFORM = "io.minipaas.platform"
INSTANCE = "io.minipaas.instance"
APP_ID = "io.minipaas.app-id"
DEPLOYMENT_ID = "io.minipaas.deployment-id"
# Marks images built here, so superseded builds can be pruned without touching anyone else's
BUILT = "io.minipaas.built"


def instance_labels(instance_name: str) -> dict[str, str]:
    return {PLATFORM: "minipaas", INSTANCE: instance_name}


def container_labels(instance_name: str, app_id: int, deployment_id: int) -> dict[str, str]:
    return {
        **instance_labels(instance_name),
        APP_ID: str(app_id),
        DEPLOYMENT_ID: str(deployment_id),
    }


def app_id_of(labels: dict[str, str]) -> int | None:
    value = labels.get(APP_ID, "")
    return int(value) if value.isdigit() else None
