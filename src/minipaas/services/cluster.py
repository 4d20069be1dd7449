"""The nodes apps run on, and where each of an app's replicas runs: read from the engine."""

from __future__ import annotations

from dataclasses import dataclass

from minipaas.db.models import App
from minipaas.runtime import RuntimeFailure, get_runtime, inventory
from minipaas.services.errors import Unavailable


@dataclass(frozen=True)
class ReplicaPlacement:
    placement: inventory.Placement
    # The platform's record names it as the replica now (else: one of a deployment that is
    # still starting or draining, or a leftover the reconciler removes)
    current: bool


def cluster_nodes() -> list[inventory.Node]:
    """The swarm's nodes with RUNTIME=swarm; else this host alone."""
    try:
        return get_runtime().nodes()
    except RuntimeFailure as exc:  # the engine is down, or not a swarm manager
        raise Unavailable(f"the Docker engine could not list its nodes: {exc}") from None


def app_placements(app: App) -> list[ReplicaPlacement]:
    """Each container (or swarm service) of the app, its node, state and published port."""
    try:
        found = get_runtime().placements(app.id)
    except RuntimeFailure as exc:
        raise Unavailable(f"the Docker engine could not list the app's replicas: {exc}") from None
    recorded = {app.container_id} | {r.container_id for r in app.extra_replicas}
    recorded.discard(None)
    return [
        ReplicaPlacement(placement, current=_named(placement.ref, recorded)) for placement in found
    ]


def _named(ref: str, recorded: set[str | None]) -> bool:
    # The record may keep a short id; the engine lists full ones
    return any(known and (ref.startswith(known) or known.startswith(ref)) for known in recorded)
