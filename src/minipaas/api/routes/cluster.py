"""The nodes apps run on (admins) and where each of an app's replicas runs (its owner)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends

from minipaas.api.deps import AdminUser, VisibleApp, _visible_app_row
from minipaas.api.responses import ADMIN, APP_ITEM, errors
from minipaas.api.schemas import NodeOut, ReplicaOut
from minipaas.services import cluster

_ENGINE_DOWN = "the Docker engine is not reachable, or (RUNTIME=swarm) not a swarm manager"

router = APIRouter(tags=["cluster"])
# Like every route under /apps/{app_id}: the caller must be able to see the app (else 404)
app_router = APIRouter(
    prefix="/apps/{app_id}", tags=["apps"], dependencies=[Depends(_visible_app_row)]
)


@router.get(
    "/cluster/nodes",
    response_model=list[NodeOut],
    responses=errors(*ADMIN, s503=_ENGINE_DOWN),
)
def list_nodes(_: AdminUser) -> list[NodeOut]:
    """The nodes apps run on: this host, or every swarm node with RUNTIME=swarm."""
    return [NodeOut.model_validate(node) for node in cluster.cluster_nodes()]


@app_router.get(
    "/replicas",
    response_model=list[ReplicaOut],
    responses=errors(*APP_ITEM, s503=_ENGINE_DOWN),
)
def list_replicas(app: VisibleApp) -> list[ReplicaOut]:
    """The app's containers (swarm services), each with its node, state and published port."""
    return [
        ReplicaOut(**asdict(found.placement), current=found.current)
        for found in cluster.app_placements(app)
    ]
