"""Apps: register, read, change, delete, deploy, lifecycle, logs, history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import JSONResponse

from minipaas.api.deps import SessionDep
from minipaas.api.schemas import ActionOut, AppCreate, AppOut, AppUpdate, DeploymentOut, LogsOut
from minipaas.services import apps, deployments, lifecycle, logs
from minipaas.services.state import Action

router = APIRouter(prefix="/apps", tags=["apps"])

# Ids are PostgreSQL integers: a larger number is a 422, not a database error
MAX_ID = 2**31 - 1
AppId = Annotated[int, Path(ge=1, le=MAX_ID, description="the app's id")]
DeploymentId = Annotated[int, Path(ge=1, le=MAX_ID, description="the deployment's id")]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AppOut)
def create_app(body: AppCreate, db: SessionDep) -> AppOut:
    """Register an app; deploy it with POST /apps/{id}/deploy."""
    app = apps.create_app(
        db=db,
        name=body.name,
        image=body.image,
        internal_port=body.internal_port,
        env=body.env,
        command=body.command if isinstance(body.command, list) else None,
        pull_policy=body.pull_policy,
    )
    return AppOut.model_validate(app)


@router.get("", response_model=list[AppOut])
def list_apps(
    db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[AppOut]:
    """List apps, oldest first; the total is in the X-Total-Count header."""
    rows, total = apps.list_apps(db=db, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [AppOut.model_validate(app) for app in rows]


@router.get("/{app_id}", response_model=AppOut)
def get_app(app_id: AppId, db: SessionDep) -> AppOut:
    """One app."""
    return AppOut.model_validate(apps.get_app(db=db, app_id=app_id))


@router.patch("/{app_id}", response_model=AppOut)
def update_app(app_id: AppId, body: AppUpdate, db: SessionDep) -> AppOut:
    """Change image, port, env, command or pull policy; applied on the next deploy."""
    changes = body.model_dump(exclude_unset=True)
    return AppOut.model_validate(apps.update_app(db=db, app_id=app_id, changes=changes))


@router.delete(
    "/{app_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={202: {"description": "accepted; the worker is still deleting"}},
)
def delete_app(app_id: AppId, db: SessionDep) -> Response:
    """Delete the app with its container, route and history."""
    done = lifecycle.request_delete(db=db, app_id=app_id)
    return Response(status_code=204 if done else 202)


@router.post("/{app_id}/deploy", status_code=status.HTTP_202_ACCEPTED, response_model=DeploymentOut)
def deploy_app(app_id: AppId, db: SessionDep) -> DeploymentOut:
    """Queue a deployment of the app's current settings."""
    return DeploymentOut.model_validate(deployments.request_deployment(db=db, app_id=app_id))


def _lifecycle(app_id: AppId, action: Action, db: SessionDep) -> JSONResponse:
    done = lifecycle.request_action(db=db, app_id=app_id, action=action)
    db.expire_all()
    app = AppOut.model_validate(apps.get_app(db=db, app_id=app_id))
    body = ActionOut(action=action.value, done=done, app=app)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if done else 202)


@router.post("/{app_id}/stop", response_model=ActionOut)
def stop_app(app_id: AppId, db: SessionDep) -> JSONResponse:
    """Stop the running container; the router answers 503 for the app."""
    return _lifecycle(app_id, Action.STOP, db)


@router.post("/{app_id}/start", response_model=ActionOut)
def start_app(app_id: AppId, db: SessionDep) -> JSONResponse:
    """Start the stopped container again."""
    return _lifecycle(app_id, Action.START, db)


@router.post("/{app_id}/restart", response_model=ActionOut)
def restart_app(app_id: AppId, db: SessionDep) -> JSONResponse:
    """Restart the container."""
    return _lifecycle(app_id, Action.RESTART, db)


@router.post("/{app_id}/remove", response_model=ActionOut)
def remove_app_container(app_id: AppId, db: SessionDep) -> JSONResponse:
    """Remove the container and its route; the app and its history stay."""
    return _lifecycle(app_id, Action.REMOVE, db)


@router.get("/{app_id}/logs", response_model=LogsOut)
def app_logs(
    app_id: AppId,
    db: SessionDep,
    tail: Annotated[int, Query(ge=1, le=100_000)] = 100,
    timestamps: bool = False,
) -> LogsOut:
    """stdout and stderr of the app's container."""
    return LogsOut(logs=logs.app_logs(db=db, app_id=app_id, tail=tail, timestamps=timestamps))


@router.get("/{app_id}/deployments", response_model=list[DeploymentOut])
def list_deployments(
    app_id: AppId, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[DeploymentOut]:
    """Deployment history, newest first."""
    rows, total = deployments.list_deployments(db=db, app_id=app_id, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [DeploymentOut.model_validate(row) for row in rows]


@router.get("/{app_id}/deployments/{deployment_id}", response_model=DeploymentOut)
def get_deployment(app_id: AppId, deployment_id: DeploymentId, db: SessionDep) -> DeploymentOut:
    """One deployment."""
    return DeploymentOut.model_validate(
        deployments.get_deployment(db=db, app_id=app_id, deployment_id=deployment_id)
    )
