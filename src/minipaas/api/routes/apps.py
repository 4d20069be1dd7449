"""Apps: register, read, change, delete, deploy, lifecycle, logs, history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from minipaas.api.deps import (
    MAX_ID,
    CurrentUser,
    Limit,
    Offset,
    SessionDep,
    VisibleApp,
    _visible_app,
)
from minipaas.api.schemas import (
    ActionOut,
    AppCreate,
    AppOut,
    AppUpdate,
    DeploymentEventOut,
    DeploymentOut,
    LogsOut,
    ReleaseOut,
    RollbackRequest,
)
from minipaas.db.models import App
from minipaas.db.session import get_session
from minipaas.services import apps, lifecycle, logs, releases
from minipaas.services.deployments import cancellation, events, records
from minipaas.services.state import Action

collection = APIRouter(prefix="/apps", tags=["apps"])
# Every route under /apps/{app_id} checks first that the caller may see the app (else 404)
item = APIRouter(prefix="/apps/{app_id}", tags=["apps"], dependencies=[Depends(_visible_app)])

DeploymentId = Annotated[int, Path(ge=1, le=MAX_ID, description="the deployment's id")]
# Streams must reach the client line by line, also through the nginx router
_UNBUFFERED = {"X-Accel-Buffering": "no"}


@collection.post("", status_code=status.HTTP_201_CREATED, response_model=AppOut)
def create_app(body: AppCreate, user: CurrentUser, db: SessionDep) -> AppOut:
    """Register an app owned by the caller; deploy it with POST /apps/{id}/deploy."""
    wanted = apps.AppSettings(
        image=body.image,
        internal_port=body.internal_port,
        env=body.env,
        command=body.command if isinstance(body.command, list) else None,
        pull_policy=body.pull_policy,
        memory_mb=body.memory_mb,
        cpus=body.cpus,
        pids=body.pids,
        health_check_path=body.health_check_path,
        health_check_running_seconds=body.health_check_running_seconds,
    )
    return AppOut.model_validate(apps.create_app(db=db, owner=user, name=body.name, wanted=wanted))


@collection.get("", response_model=list[AppOut])
def list_apps(
    user: CurrentUser, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[AppOut]:
    """List the apps the caller may see, oldest first; the total is in X-Total-Count."""
    rows, total = apps.list_apps(db=db, user=user, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [AppOut.model_validate(app) for app in rows]


@item.get("", response_model=AppOut)
def get_app(app: VisibleApp) -> AppOut:
    """One app."""
    return AppOut.model_validate(app)


@item.patch("", response_model=AppOut)
def update_app(app: VisibleApp, body: AppUpdate, db: SessionDep, user: CurrentUser) -> AppOut:
    """Change image, port, env, command, pull policy or limits; applied on the next deploy."""
    changes = body.model_dump(exclude_unset=True)
    return AppOut.model_validate(apps.update_app(db=db, app=app, changes=changes, caller=user))


@item.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={202: {"description": "accepted; the worker is still deleting"}},
)
def delete_app(app: VisibleApp, db: SessionDep) -> Response:
    """Delete the app with its container, route and history."""
    done = lifecycle.request_delete(db=db, app_id=app.id)
    return Response(status_code=204 if done else 202)


@item.get("/releases", response_model=list[ReleaseOut])
def list_releases(
    app: VisibleApp, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[ReleaseOut]:
    """Releases (one per successful deployment), newest first."""
    rows, total = releases.list_releases(db=db, app_id=app.id, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [ReleaseOut.model_validate(row) for row in rows]


@item.post("/rollback", status_code=status.HTTP_202_ACCEPTED, response_model=DeploymentOut)
def rollback_app(
    app: VisibleApp, db: SessionDep, body: RollbackRequest | None = None
) -> DeploymentOut:
    """Deploy an earlier release's image and settings (default: the one before the current)."""
    number = body.release if body is not None and body.release is not None else 0
    return DeploymentOut.model_validate(
        records.request_deployment(db=db, app_id=app.id, rollback_to=number)
    )


@item.post("/deploy", status_code=status.HTTP_202_ACCEPTED, response_model=DeploymentOut)
def deploy_app(app: VisibleApp, db: SessionDep) -> DeploymentOut:
    """Queue a deployment of the app's current settings."""
    return DeploymentOut.model_validate(records.request_deployment(db=db, app_id=app.id))


def _lifecycle(app: App, action: Action, db: SessionDep) -> JSONResponse:
    done = lifecycle.request_action(db=db, app_id=app.id, action=action)
    db.refresh(app)
    body = ActionOut(action=action.value, done=done, app=AppOut.model_validate(app))
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if done else 202)


@item.post("/stop", response_model=ActionOut)
def stop_app(app: VisibleApp, db: SessionDep) -> JSONResponse:
    """Stop the running container; the router answers 503 for the app."""
    return _lifecycle(app, Action.STOP, db)


@item.post("/start", response_model=ActionOut)
def start_app(app: VisibleApp, db: SessionDep) -> JSONResponse:
    """Start the stopped container again."""
    return _lifecycle(app, Action.START, db)


@item.post("/restart", response_model=ActionOut)
def restart_app(app: VisibleApp, db: SessionDep) -> JSONResponse:
    """Restart the container."""
    return _lifecycle(app, Action.RESTART, db)


@item.post("/remove", response_model=ActionOut)
def remove_app_container(app: VisibleApp, db: SessionDep) -> JSONResponse:
    """Remove the container and its route; the app and its history stay."""
    return _lifecycle(app, Action.REMOVE, db)


@item.get(
    "/logs",
    response_model=LogsOut,
    responses={200: {"content": {"text/plain": {}}, "description": "with follow=true: a stream"}},
)
def app_logs(
    app: VisibleApp,
    request: Request,
    db: SessionDep,
    tail: Annotated[int, Query(ge=1, le=100_000)] = 100,
    timestamps: bool = False,
    follow: Annotated[bool, Query(description="keep streaming new lines (text/plain)")] = False,
) -> Response:
    """stdout and stderr of the app's container; with follow=true, new lines as they come."""
    if follow and app.container_id is not None:
        db.close()  # a stream can last hours: it must not hold a pooled database connection
        stream = logs.follow_app_logs(
            container_id=app.container_id,
            tail=tail,
            timestamps=timestamps,
            client_gone=request.is_disconnected,
        )
        return StreamingResponse(
            stream, media_type="text/plain; charset=utf-8", headers=_UNBUFFERED
        )
    body = LogsOut(logs=logs.app_logs(app=app, tail=tail, timestamps=timestamps))
    return JSONResponse(body.model_dump())


@item.get("/deployments", response_model=list[DeploymentOut])
def list_deployments(
    app: VisibleApp, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[DeploymentOut]:
    """Deployment history, newest first."""
    rows, total = records.list_deployments(db=db, app_id=app.id, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [DeploymentOut.model_validate(row) for row in rows]


@item.post(
    "/deployments/{deployment_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentOut,
)
def cancel_deployment(
    app: VisibleApp, deployment_id: DeploymentId, db: SessionDep
) -> DeploymentOut:
    """Cancel a queued (ends now) or running (ends at the worker's next check) deployment."""
    return DeploymentOut.model_validate(
        cancellation.cancel_deployment(db=db, app_id=app.id, deployment_id=deployment_id)
    )


@item.get(
    "/deployments/{deployment_id}/events",
    response_model=list[DeploymentEventOut],
    responses={200: {"content": {"text/event-stream": {}}, "description": "with follow=true"}},
)
def deployment_events(
    app: VisibleApp,
    deployment_id: DeploymentId,
    request: Request,
    db: SessionDep,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="only events after this id")] = 0,
    follow: Annotated[bool, Query(description="Server-Sent Events until it ends")] = False,
) -> Response:
    """A deployment's progress: queued, image, container, health, route, succeeded/failed."""
    rows = events.list_events(db=db, app_id=app.id, deployment_id=deployment_id, after=after)
    if not follow:
        body = [DeploymentEventOut.model_validate(row).model_dump(mode="json") for row in rows]
        return JSONResponse(body)
    db.close()  # the stream polls with sessions of its own
    return StreamingResponse(
        _event_stream(app.id, deployment_id, after, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", **_UNBUFFERED},
    )


async def _event_stream(
    app_id: int, deployment_id: int, after: int, request: Request
) -> AsyncIterator[str]:
    """SSE: every event once, ending after succeeded/failed or when the client goes."""
    while not await request.is_disconnected():
        rows = await run_in_threadpool(_events_after, app_id, deployment_id, after)
        for row in rows:
            after = row.id
            yield f"id: {row.id}\nevent: {row.kind}\ndata: {row.model_dump_json()}\n\n"
            if row.kind in ("succeeded", "failed"):
                return
        await asyncio.sleep(0.25)


def _events_after(app_id: int, deployment_id: int, after: int) -> list[DeploymentEventOut]:
    with get_session() as db:
        rows = events.list_events(db=db, app_id=app_id, deployment_id=deployment_id, after=after)
        return [DeploymentEventOut.model_validate(row) for row in rows]


@item.get("/deployments/{deployment_id}", response_model=DeploymentOut)
def get_deployment(app: VisibleApp, deployment_id: DeploymentId, db: SessionDep) -> DeploymentOut:
    """One deployment."""
    return DeploymentOut.model_validate(
        records.get_deployment(db=db, app_id=app.id, deployment_id=deployment_id)
    )
