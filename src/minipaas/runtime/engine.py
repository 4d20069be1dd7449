"""Which engine runs apps (RUNTIME): the one place that chooses."""

from __future__ import annotations

from functools import lru_cache

from minipaas.config import Settings, get_settings
from minipaas.runtime.docker_runtime import DockerRuntime, PullRecorder


@lru_cache
def get_runtime() -> DockerRuntime:
    # The ledger of pulled images is kept in the database, next to the releases that use them
    from minipaas.services.images import record_pull
    from minipaas.services.install_identity import ensure_install_id

    settings = get_settings()
    if settings.runtime == "swarm":
        return _swarm_runtime(settings, on_pull=record_pull)
    return DockerRuntime(
        settings, on_pull=record_pull, install_id=lambda: ensure_install_id(settings)
    )


def _swarm_runtime(settings: Settings, *, on_pull: PullRecorder) -> DockerRuntime:
    """Swarm, its images pushed to the cluster registry (logged in once) and run by digest."""
    from minipaas.host.registry import registry_access
    from minipaas.runtime import registry
    from minipaas.runtime.swarm_runtime import SwarmRuntime
    from minipaas.services.install_identity import ensure_install_id

    runtime = SwarmRuntime(
        settings, on_pull=on_pull, install_id=lambda: ensure_install_id(settings)
    )
    access = registry_access(settings)
    cluster = registry.ClusterRegistry(
        lambda: runtime.client, access.address, access.user, access.password
    )
    runtime.image_publisher = lambda image, app_id: cluster.push(
        image, registry.app_repository(settings.instance_name, app_id)
    )
    runtime.forget_cluster_names = lambda image_id: registry.forget_cluster_names(
        runtime.client, image_id, access.address
    )
    return runtime
