"""Apps: register, read, change, delete, deploy, lifecycle, logs, history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from minipaas import security
from minipaas.api.deps import (
    MAX_ID,
    CurrentUser,
    Limit,
    Offset,
    SessionDep,
    TokenChecked,
    VisibleApp,
    VisibleAppId,
    VisibleAppRow,
    _visible_app_row,
)
from minipaas.api.responses import APP_ITEM, BODY, Responses, errors
from minipaas.api.schemas import (
    ActionOut,
    AppActionOut,
    AppAnswer,
    AppCreate,
    AppListAnswer,
    AppOut,
    AppUpdate,
    AppWrittenOut,
    DeploymentEventOut,
    DeploymentOut,
    LogsOut,
    ReleaseOut,
    RollbackRequest,
    app_answers,
)
from minipaas.config import get_settings
from minipaas.db.models import ActionStatus, App, Deployment, User
from minipaas.db.session import async_read_engine, get_session
from minipaas.services import (
    app_actions,
    apps,
    image_presence,
    lifecycle,
    logs,
    releases,
    stream_guard,
)
from minipaas.services.deployments import cancellation, dispatch, events, records
from minipaas.services.errors import NotFound
from minipaas.services.state import Action

collection = APIRouter(prefix="/apps", tags=["apps"])
# Every route under /apps/{app_id} checks first that the caller may see the app (else 404)
item = APIRouter(prefix="/apps/{app_id}", tags=["apps"], dependencies=[Depends(_visible_app_row)])

# OpenAPI links, so clients and stateful fuzzing follow create -> deploy -> deployment
APP_ID_USERS = (
    "get_app_apps__app_id__get",
    "update_app_apps__app_id__patch",
    "deploy_app_apps__app_id__deploy_post",
    "list_deployments_apps__app_id__deployments_get",
    "delete_app_apps__app_id__delete",
)
DEPLOYMENT_ID_USERS = (
    "get_deployment_apps__app_id__deployments__deployment_id__get",
    "deployment_events_apps__app_id__deployments__deployment_id__events_get",
    "cancel_deployment_apps__app_id__deployments__deployment_id__cancel_post",
)


def _links(field: str, parameter: str, operation_ids: tuple[str, ...]) -> dict[str, object]:
    """The answer's `field` is `parameter` of these operations (app_id from the path too)."""
    parameters = {parameter: f"$response.body#/{field}"}
    if parameter != "app_id":
        parameters["app_id"] = "$request.path.app_id"
    return {
        operation_id.split("_apps_")[0]: {"operationId": operation_id, "parameters": parameters}
        for operation_id in operation_ids
    }


DeploymentId = Annotated[int, Path(ge=1, le=MAX_ID, description="the deployment's id")]
# Streams must reach the client line by line, also through the nginx router
_UNBUFFERED = {"X-Accel-Buffering": "no"}


@collection.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AppWrittenOut,
    responses={
        201: {"links": _links("id", "app_id", APP_ID_USERS)},
        **errors(
            *BODY,
            403,
            409,
            s403="over the caller's quota of apps, memory, CPUs or processes",
            e403="app quota reached: alice has 10 apps and may have 10; delete one first",
            s409="an app of that name exists",
        ),
    },
)
def create_app(body: AppCreate, user: CurrentUser, db: SessionDep) -> AppWrittenOut:
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
        replicas=body.replicas,
    )
    apps.check_image_rules(get_settings(), body.image, user=user, app_id=None)
    notice = image_presence.check_image_present(body.image, body.pull_policy)
    created = apps.create_app(db=db, owner=user, name=body.name, wanted=wanted)
    return AppWrittenOut.model_validate(created).model_copy(update={"notice": notice})


@collection.get("", response_model=list[AppOut], responses=errors())
async def list_apps(caller: TokenChecked, limit: Limit = 50, offset: Offset = 0) -> Response:
    """List the apps the caller may see, oldest first; the total is in X-Total-Count."""
    # A pooled connection on the event loop, no ORM session: a page needs none of its machinery
    async with async_read_engine().connect() as connection:
        rows, total = await apps.list_apps(
            connection, user_id=caller.user_id, is_admin=caller.is_admin, limit=limit, offset=offset
        )
    # Dumped by pydantic-core in AppOut's shape; FastAPI would validate each row twice
    body = AppListAnswer.dump_json(app_answers(rows))
    return Response(body, media_type="application/json", headers={"X-Total-Count": str(total)})


@item.get("", response_model=AppOut, responses=errors(*APP_ITEM))
async def get_app(row: VisibleAppRow) -> Response:
    """One app."""
    # Read with the caller's token (no second query, no ORM object), dumped by pydantic-core
    body = AppAnswer.dump_json(app_answers([dict(row)])[0])
    return Response(body, media_type="application/json")


@item.patch(
    "",
    response_model=AppWrittenOut,
    responses=errors(
        *APP_ITEM,
        *BODY,
        403,
        s403="over the owner's memory, CPU or process quota",
        e403="memory quota exceeded: alice's apps would hold 1536 MB, the quota is 1024 MB",
    ),
)
def update_app(
    app: VisibleApp, body: AppUpdate, db: SessionDep, user: CurrentUser
) -> AppWrittenOut:
    """Change image, port, env, command, pull policy or limits; applied on the next deploy."""
    changes = body.model_dump(exclude_unset=True)
    notice = None
    if "image" in changes:
        apps.check_image_rules(get_settings(), changes["image"], user=user, app_id=app.id)
    if "image" in changes or "pull_policy" in changes:
        notice = image_presence.check_image_present(
            changes.get("image", app.image), changes.get("pull_policy", app.pull_policy)
        )
    replicas_before = app.replicas
    updated = apps.update_app(db=db, app=app, changes=changes, caller=user)
    if updated.replicas != replicas_before:
        scale = app_actions.request_scale(db=db, app_id=updated.id, user=user)
        if scale is not None:
            notice = f"scaling to {updated.replicas} replica(s): action {scale.id}"
        db.refresh(updated)
    return AppWrittenOut.model_validate(updated).model_copy(update={"notice": notice})


@item.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        202: {"description": "accepted; the worker is still deleting"},
        **errors(*APP_ITEM, 409, s409="a deployment or another delete is in progress"),
    },
)
async def delete_app(app_id: VisibleAppId, db: SessionDep) -> Response:
    """Delete the app with its container, route and history (202 while the worker is on it:
    GET /apps/{id} answers 404 once it is gone)."""
    job = await run_in_threadpool(lifecycle.queue_delete, db=db, app_id=app_id)
    await run_in_threadpool(db.close)  # no pooled connection is held while we wait
    done = await lifecycle.wait_for_delete(job, get_settings().action_wait_seconds)
    return Response(status_code=204 if done else 202)


@item.get("/releases", response_model=list[ReleaseOut], responses=errors(*APP_ITEM))
def list_releases(
    app_id: VisibleAppId, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[ReleaseOut]:
    """Releases (one per successful deployment), newest first."""
    rows, total = releases.list_releases(db=db, app_id=app_id, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [ReleaseOut.model_validate(row) for row in rows]


@item.post(
    "/rollback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentOut,
    responses=errors(
        *APP_ITEM,
        *BODY,
        403,
        409,
        s403="the release is over the owner's quota",
        e403="memory quota exceeded: alice's apps would hold 1536 MB, the quota is 1024 MB",
        s409="no such earlier release, or a deployment is in progress",
    ),
)
def rollback_app(
    app_id: VisibleAppId, db: SessionDep, _: CurrentUser, body: RollbackRequest | None = None
) -> DeploymentOut:
    """Deploy an earlier release's image and settings (default: the one before the current)."""
    number = body.release if body is not None and body.release is not None else 0
    return _deployment_out(db, records.request_deployment(db=db, app_id=app_id, rollback_to=number))


@item.post(
    "/deploy",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentOut,
    responses={
        202: {"links": _links("id", "deployment_id", DEPLOYMENT_ID_USERS)},
        **errors(*APP_ITEM, 403, 409, s409="a deployment of the app is in progress"),
    },
)
def deploy_app(app_id: VisibleAppId, db: SessionDep, _: CurrentUser) -> DeploymentOut:
    """Queue a deployment of the app's current settings."""
    # CurrentUser puts the caller in the session with no query: the owner's row, which the
    # image rules read, is then no query either when the caller owns the app
    return _deployment_out(db, records.request_deployment(db=db, app_id=app_id))


def _deployment_out(db: Session, deployment: Deployment) -> DeploymentOut:
    out = DeploymentOut.model_validate(deployment)
    out.queue_position = dispatch.queue_position(db, deployment)
    return out


# How long a lifecycle request waits for its action before answering 202 (0: answer at once)
ActionWait = Annotated[
    float | None,
    Query(ge=0, le=60, description="seconds to wait for the action; default ACTION_WAIT_SECONDS"),
]


# 200 when the action ended in the wait, 202 to follow it at Location; its failure's status
_LIFECYCLE: Responses = {
    200: {"description": "the action succeeded within the wait"},
    202: {
        "model": ActionOut,
        "description": "accepted; follow the action at Location until it ends",
        "headers": {
            "Location": {"description": "the action: GET it", "schema": {"type": "string"}}
        },
    },
    **errors(
        *APP_ITEM,
        403,
        409,
        500,
        s403="starting would put the owner over a quota",
        e403="memory quota exceeded: alice's apps would hold 1536 MB, the quota is 1024 MB",
        e409="cannot start: the app is already running; use restart",
        s409="the action does not fit the app's state (e.g. a deployment is in progress)",
        s500="the action failed in a way nobody foresaw: a bug, in the worker's log",
    ),
}


async def _lifecycle(
    app: App, action: Action, db: Session, user: User, wait: float | None
) -> JSONResponse:
    """Records the action, waits a little for it without holding a thread, then answers:
    200 when it succeeded in that time, its error when it failed, else 202 to follow it."""
    row = await run_in_threadpool(
        app_actions.request_action, db=db, app_id=app.id, action=action, user=user
    )
    action_id = row.id
    await run_in_threadpool(db.close)  # no pooled connection is held while we wait
    seconds = get_settings().action_wait_seconds if wait is None else wait
    await app_actions.wait_until_ended(action_id, seconds)
    return await run_in_threadpool(_action_answer, app.id, action_id)


def _action_answer(app_id: int, action_id: int) -> JSONResponse:
    with get_session() as db:
        row = app_actions.get_action(db=db, app_id=app_id, action_id=action_id)
        app_actions.raise_if_failed(row)
        app = apps.get_app(db=db, app_id=app_id)
        done = row.status is ActionStatus.SUCCEEDED
        base = AppActionOut.model_validate(row).model_dump()
        body = ActionOut(**base, done=done, app=AppOut.model_validate(app))
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=200 if done else 202,
        headers={"Location": f"/apps/{app_id}/actions/{action_id}"},
    )


@item.post("/stop", response_model=ActionOut, responses=_LIFECYCLE)
async def stop_app(
    app: VisibleApp, db: SessionDep, user: CurrentUser, wait: ActionWait = None
) -> JSONResponse:
    """Stop the running container; the router answers 503 for the app."""
    return await _lifecycle(app, Action.STOP, db, user, wait)


@item.post("/start", response_model=ActionOut, responses=_LIFECYCLE)
async def start_app(
    app: VisibleApp, db: SessionDep, user: CurrentUser, wait: ActionWait = None
) -> JSONResponse:
    """Start the stopped container again."""
    return await _lifecycle(app, Action.START, db, user, wait)


@item.post("/restart", response_model=ActionOut, responses=_LIFECYCLE)
async def restart_app(
    app: VisibleApp, db: SessionDep, user: CurrentUser, wait: ActionWait = None
) -> JSONResponse:
    """Restart the container."""
    return await _lifecycle(app, Action.RESTART, db, user, wait)


@item.post("/remove", response_model=ActionOut, responses=_LIFECYCLE)
async def remove_app_container(
    app: VisibleApp, db: SessionDep, user: CurrentUser, wait: ActionWait = None
) -> JSONResponse:
    """Remove the container and its route; the app and its history stay."""
    return await _lifecycle(app, Action.REMOVE, db, user, wait)


ActionId = Annotated[int, Path(ge=1, le=MAX_ID, description="the action's id")]


@item.get("/actions", response_model=list[AppActionOut], responses=errors(*APP_ITEM))
def list_actions(
    app_id: VisibleAppId, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[AppActionOut]:
    """Stops, starts, restarts and removes asked for, newest first."""
    rows, total = app_actions.list_actions(db=db, app_id=app_id, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [AppActionOut.model_validate(row) for row in rows]


@item.get("/actions/{action_id}", response_model=AppActionOut, responses=errors(*APP_ITEM))
def get_action(app_id: VisibleAppId, action_id: ActionId, db: SessionDep) -> AppActionOut:
    """One action: follow it until its status is succeeded or failed."""
    return AppActionOut.model_validate(
        app_actions.get_action(db=db, app_id=app_id, action_id=action_id)
    )


@item.get(
    "/logs",
    response_model=LogsOut,
    responses={
        200: {"content": {"text/plain": {}}, "description": "with follow=true: a stream"},
        **errors(*APP_ITEM),
    },
)
def app_logs(
    app: VisibleApp,
    user: CurrentUser,
    request: Request,
    db: SessionDep,
    tail: Annotated[int, Query(ge=1, le=100_000)] = 100,
    timestamps: bool = False,
    follow: Annotated[bool, Query(description="keep streaming new lines (text/plain)")] = False,
) -> Response:
    """stdout and stderr of the app's container; with follow=true, new lines as they come
    (until the client leaves or the token, user or app no longer allow it)."""
    if follow and app.container_id is not None:
        guard = _open_stream(request, user, app)
        containers = logs.replica_containers(app)
        db.close()  # a stream can last hours: it must not hold a pooled database connection
        stream = logs.follow_app_logs(
            containers=containers,
            tail=tail,
            timestamps=timestamps,
            ended=guard.ended,
        )
        return StreamingResponse(
            guard.guarded(stream), media_type="text/plain; charset=utf-8", headers=_UNBUFFERED
        )
    body = LogsOut(logs=logs.app_logs(app=app, tail=tail, timestamps=timestamps))
    return JSONResponse(body.model_dump())


@item.get("/deployments", response_model=list[DeploymentOut], responses=errors(*APP_ITEM))
def list_deployments(
    app_id: VisibleAppId, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[DeploymentOut]:
    """Deployment history, newest first."""
    rows, total = records.list_deployments(db=db, app_id=app_id, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [_deployment_out(db, row) for row in rows]


@item.post(
    "/deployments/{deployment_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeploymentOut,
    responses=errors(*APP_ITEM, 409, s409="the deployment has ended already"),
)
def cancel_deployment(
    app_id: VisibleAppId, deployment_id: DeploymentId, db: SessionDep
) -> DeploymentOut:
    """Cancel a queued (ends now) or running (ends at the worker's next check) deployment."""
    cancelled = cancellation.cancel_deployment(db=db, app_id=app_id, deployment_id=deployment_id)
    dispatch.dispatch_after(cancelled.id)  # a slot may be free, and the line moved up
    return _deployment_out(db, cancelled)


@item.get(
    "/deployments/{deployment_id}/events",
    response_model=list[DeploymentEventOut],
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "with follow=true"},
        **errors(*APP_ITEM),
    },
)
def deployment_events(
    app: VisibleApp,
    user: CurrentUser,
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
    guard = _open_stream(request, user, app)
    db.close()  # the stream polls with sessions of its own
    return StreamingResponse(
        guard.guarded(_event_stream(app.id, deployment_id, after, guard)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", **_UNBUFFERED},
    )


def _open_stream(request: Request, user: User, app: App) -> stream_guard.StreamGuard:
    """A slot for the stream (429 past USER_MAX_STREAMS), re-checked as it runs."""
    return stream_guard.open_stream(
        token=security.bearer_token(request.headers.get("authorization", "")),
        user_id=user.id,
        app_id=app.id,
        client_gone=request.is_disconnected,
    )


async def _event_stream(
    app_id: int, deployment_id: int, after: int, guard: stream_guard.StreamGuard
) -> AsyncIterator[str]:
    """SSE: every event once, ending after succeeded/failed, at once for a deployment that
    had already ended, when the client goes, or (a last `closed` event) when access ends."""
    while (reason := await guard.ended()) is None:
        try:
            rows, ended = await run_in_threadpool(_events_after, app_id, deployment_id, after)
        except NotFound:
            reason = "the deployment no longer exists"
            break
        for row in rows:
            after = row.id
            yield f"id: {row.id}\nevent: {row.kind}\ndata: {row.model_dump_json()}\n\n"
            if row.kind in ("succeeded", "failed"):
                return
        if ended:
            return
        await asyncio.sleep(0.25)
    if reason:
        yield f"event: closed\ndata: {json.dumps({'reason': reason})}\n\n"


def _events_after(
    app_id: int, deployment_id: int, after: int
) -> tuple[list[DeploymentEventOut], bool]:
    with get_session() as db:
        rows, ended = events.events_and_end(
            db=db, app_id=app_id, deployment_id=deployment_id, after=after
        )
        return [DeploymentEventOut.model_validate(row) for row in rows], ended


@item.get("/deployments/{deployment_id}", response_model=DeploymentOut, responses=errors(*APP_ITEM))
def get_deployment(
    app_id: VisibleAppId, deployment_id: DeploymentId, db: SessionDep
) -> DeploymentOut:
    """One deployment."""
    return _deployment_out(
        db, records.get_deployment(db=db, app_id=app_id, deployment_id=deployment_id)
    )
