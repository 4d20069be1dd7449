"""The labels the platform puts on what it creates in Docker, and how to read them back."""

from __future__ import annotations

PLATFORM = "io.minipaas.platform"
INSTANCE = "io.minipaas.instance"
APP_ID = "io.minipaas.app-id"
DEPLOYMENT_ID = "io.minipaas.deployment-id"
# Which of the app's replicas (0, 1, ...) the container is: logs name it
REPLICA = "io.minipaas.replica"
# On a build's own network: the build it is for, `<instance>-build-<id>` (runtime/builder.py)
BUILD = "io.minipaas.build"
# The install (DATA_DIR) that made it: two installs may share an INSTANCE_NAME by mistake, and
# neither may then remove what the other made
INSTALL_ID = "io.minipaas.install-id"


def instance_labels(instance_name: str, install_id: str | None = None) -> dict[str, str]:
    found = {PLATFORM: "minipaas", INSTANCE: instance_name}
    if install_id:
        found[INSTALL_ID] = install_id
    return found


def container_labels(
    instance_name: str, app_id: int, deployment_id: int, replica: int = 0
) -> dict[str, str]:
    return {
        **instance_labels(instance_name),
        APP_ID: str(app_id),
        DEPLOYMENT_ID: str(deployment_id),
        REPLICA: str(replica),
    }


def app_id_of(labels: dict[str, str]) -> int | None:
    value = labels.get(APP_ID, "")
    return int(value) if value.isdigit() else None


def install_id_of(labels: dict[str, str]) -> str | None:
    """The install that made it; None for what versions before install ids made."""
    return labels.get(INSTALL_ID) or None


def made_by_another_install(labels: dict[str, str], install_id: str | None) -> bool:
    """Stamped with another install's id (unstamped ones are legacy: not known to be foreign)."""
    stamped = install_id_of(labels)
    return stamped is not None and stamped != install_id
