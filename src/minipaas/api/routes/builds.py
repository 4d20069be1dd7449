"""Builds from source: upload a context, follow its build, cancel it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from minipaas import security
from minipaas.api.deps import (
    MAX_ID,
    CurrentUser,
    Limit,
    Offset,
    SessionDep,
    VisibleApp,
    _visible_app_row,
)
from minipaas.api.responses import APP_ITEM, BODY, errors
from minipaas.api.schemas import BuildOut
from minipaas.config import Settings, get_settings
from minipaas.db.models import ACTIVE_BUILD_STATUSES, App, Build, User
from minipaas.db.session import get_session
from minipaas.runtime import get_runtime
from minipaas.runtime.builder import build_triggers
from minipaas.services import stream_guard
from minipaas.services.builds import base_images, context, records
from minipaas.services.errors import InvalidRequest, NotFound, PayloadTooLarge

# Every route checks first that the caller may see the app (else 404), as the app routes do
router = APIRouter(
    prefix="/apps/{app_id}/builds", tags=["builds"], dependencies=[Depends(_visible_app_row)]
)

BuildNumber = Annotated[int, PathParam(ge=1, le=MAX_ID, description="the build's number")]
_UNBUFFERED = {"X-Accel-Buffering": "no"}
# Free disk is checked again each time this much more of an upload has arrived
_DISK_CHECK_EVERY = 16 * 1024 * 1024
_BUILD_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}=")
_MAX_BUILD_ARGS = 64
_MAX_BUILD_ARG_VALUE = 4096
# The upload is written in pieces of about this size (one thread hop each)
_WRITE_CHUNK = 1024 * 1024
_MB = 1024 * 1024
# Lines one log answer holds at most (follow with ?after= for the rest)
_LOG_PAGE = 100_000

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "the build context: a tar archive (gzip allowed) with a Dockerfile",
        # Any content type is read as bytes; these say what the bytes should be
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/x-tar": {"schema": {"type": "string", "format": "binary"}},
            "application/gzip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _build_args(raw: list[str]) -> dict[str, str]:
    if len(raw) > _MAX_BUILD_ARGS:
        raise InvalidRequest(f"at most {_MAX_BUILD_ARGS} build args", loc=("query", "build_arg"))
    found: dict[str, str] = {}
    for item in raw:
        if "\x00" in item:  # PostgreSQL's JSON cannot hold it
            raise InvalidRequest(
                f"build_arg {item[:60]!r} contains a NUL character; remove it",
                loc=("query", "build_arg"),
            )
        if not _BUILD_ARG.match(item) or len(item) > _MAX_BUILD_ARG_VALUE + 129:
            raise InvalidRequest(
                f"build_arg {item[:60]!r} must be NAME=VALUE (NAME: letters, digits, _; "
                f"VALUE at most {_MAX_BUILD_ARG_VALUE} characters)",
                loc=("query", "build_arg"),
            )
        name, _, value = item.partition("=")
        found[name] = value
    return found


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BuildOut,
    openapi_extra=_UPLOAD_BODY,
    responses=errors(
        *APP_ITEM,
        *BODY,
        409,
        413,
        507,
        s400="the body could not be read as a stream of bytes",
        s409="a build of the app is queued or running",
        e409="build 3 of app 42 is running; wait for it to end or cancel it",
        s413="the upload is larger than BUILD_MAX_UPLOAD_MB",
        s422="the context is not a tar, or an entry is unsafe (named), or a bad option",
        s429="too many failed logins, or the owner has BUILDS_PER_MEMBER builds going",
        s507="less free disk under DATA_DIR than BUILD_MIN_FREE_DISK_MB",
    ),
)
async def create_build(
    app: VisibleApp,
    user: CurrentUser,
    request: Request,
    db: SessionDep,
    dockerfile: Annotated[
        str, Query(max_length=255, description="the Dockerfile's path inside the context")
    ] = "Dockerfile",
    build_arg: Annotated[
        list[str], Query(max_length=_MAX_BUILD_ARGS, description="NAME=VALUE, repeatable")
    ] = [],  # noqa: B006  (FastAPI copies query defaults)
    deploy: Annotated[bool, Query(description="deploy the image when the build succeeds")] = True,
) -> JSONResponse:
    """Upload a build context (tar or tar.gz body); the image is built, then deployed."""
    settings = get_settings()
    options = records.BuildOptions(
        dockerfile=context.check_dockerfile_path(dockerfile),
        build_args=_build_args(build_arg),
        deploy=deploy,
    )
    await run_in_threadpool(_precheck, app.id, settings)
    await run_in_threadpool(db.close)  # an upload can take minutes: no pooled connection held
    upload = await _receive(request, settings)
    try:
        checked = await run_in_threadpool(_check_upload, upload, settings, options, app.id, user)
        build = await run_in_threadpool(_record, db, app.id, user, checked, options)
    finally:
        upload.path.unlink(missing_ok=True)
        upload.clean.unlink(missing_ok=True)
    return JSONResponse(
        build.model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/apps/{app.id}/builds/{build.number}"},
    )


def _precheck(app_id: int, settings: Settings) -> None:
    """409, 429 and 507 before a byte of the upload is read."""
    with get_session() as db:
        found = db.get(App, app_id)
        if found is None:
            raise NotFound(f"app {app_id} does not exist")
        records.check_can_build(db=db, app=found, settings=settings)


class _Received:
    def __init__(self, path: Path, clean: Path, sha256: str, size: int) -> None:
        self.path = path
        self.clean = clean
        self.sha256 = sha256
        self.size = size


def _too_large(settings: Settings) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than BUILD_MAX_UPLOAD_MB ({settings.build_max_upload_mb} MB); "
        "leave dependencies and build outputs out of the context (.dockerignore)"
    )


async def _receive(request: Request, settings: Settings) -> _Received:
    """The body, streamed to a file under DATA_DIR; 413 as soon as it passes the cap."""
    cap = settings.build_max_upload_mb * _MB
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(settings)  # before reading any of it
    incoming = settings.builds_dir / "incoming"
    await run_in_threadpool(incoming.mkdir, parents=True, exist_ok=True)
    name = secrets.token_hex(8)
    path, clean = incoming / f"{name}.upload", incoming / f"{name}.tar"
    digest = hashlib.sha256()
    size = 0
    handle: IO[bytes] = await run_in_threadpool(path.open, "wb")
    try:
        pending = bytearray()
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise _too_large(settings)
            pending += chunk
            if len(pending) >= _WRITE_CHUNK:
                await run_in_threadpool(_write, handle, digest, bytes(pending))
                pending.clear()
                if size // _DISK_CHECK_EVERY != (size - len(chunk)) // _DISK_CHECK_EVERY:
                    # Several uploads at once must not fill the disk PostgreSQL lives on
                    await run_in_threadpool(records.check_free_disk, settings)
        await run_in_threadpool(_write, handle, digest, bytes(pending))
    except BaseException:
        await run_in_threadpool(handle.close)
        path.unlink(missing_ok=True)
        raise
    await run_in_threadpool(handle.close)
    if size == 0:
        path.unlink(missing_ok=True)
        raise InvalidRequest(
            "the body is empty: send the build context as a tar or tar.gz archive",
            loc=("body",),
        )
    return _Received(path, clean, digest.hexdigest(), size)


def _write(handle: IO[bytes], digest: hashlib._Hash, data: bytes) -> None:
    digest.update(data)
    handle.write(data)


def _check_upload(
    upload: _Received, settings: Settings, options: records.BuildOptions, app_id: int, user: User
) -> records.Upload:
    summary = context.sanitize_context(
        upload.path,
        upload.clean,
        dockerfile=options.dockerfile,
        max_bytes=settings.build_max_context_mb * _MB,
        max_files=settings.build_max_files,
        check_disk=lambda: records.check_free_disk(settings),
    )
    runtime = get_runtime()
    base_images.check_base_images(
        settings,
        summary.dockerfile,
        build_args=options.build_args,
        app_id=app_id,
        user=user,
        triggers_of=lambda reference: build_triggers(runtime, reference) or [],
    )
    return records.Upload(
        clean_tar=upload.clean,
        sha256=upload.sha256,
        size=upload.size,
        files=summary.files,
        context_bytes=summary.bytes,
    )


def _record(
    db: Session, app_id: int, user: User, upload: records.Upload, options: records.BuildOptions
) -> BuildOut:
    """Recorded and read back in a worker thread: no database I/O on the event loop."""
    build = records.request_build(db=db, app_id=app_id, user=user, upload=upload, options=options)
    return BuildOut.model_validate(build)


@router.get("", response_model=list[BuildOut], responses=errors(*APP_ITEM))
def list_builds(
    app: VisibleApp, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[BuildOut]:
    """Builds, newest first (the total is in X-Total-Count)."""
    rows, total = records.list_builds(db=db, app_id=app.id, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [BuildOut.model_validate(row) for row in rows]


@router.get("/{number}", response_model=BuildOut, responses=errors(*APP_ITEM))
def get_build(app: VisibleApp, number: BuildNumber, db: SessionDep) -> BuildOut:
    """One build."""
    return BuildOut.model_validate(records.get_build(db=db, app_id=app.id, number=number))


@router.post(
    "/{number}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BuildOut,
    responses=errors(*APP_ITEM, 409, s409="the build has ended already"),
)
def cancel_build(app: VisibleApp, number: BuildNumber, db: SessionDep) -> BuildOut:
    """Cancel a queued (ends now) or running build (its builder stops it within seconds)."""
    return BuildOut.model_validate(records.cancel_build(db=db, app_id=app.id, number=number))


@router.get(
    "/{number}/log",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "the lines after `after`; with follow=true, a stream until it ends",
            "headers": {
                "X-Log-Lines": {
                    "description": "the number of the last line sent (resume with ?after=)",
                    "schema": {"type": "integer"},
                }
            },
        },
        **errors(*APP_ITEM),
    },
)
def build_log(
    app: VisibleApp,
    user: CurrentUser,
    number: BuildNumber,
    request: Request,
    db: SessionDep,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="skip the first N lines")] = 0,
    follow: Annotated[bool, Query(description="stream new lines until the build ends")] = False,
) -> Response:
    """The build's output, one line per line; follow=true streams it as it comes."""
    build = records.get_build(db=db, app_id=app.id, number=number)
    if not follow:
        rows = records.log_lines(db=db, build_id=build.id, after=after, limit=_LOG_PAGE)
        last = rows[-1].line if rows else after
        text = "".join(f"{row.text}\n" for row in rows)
        return PlainTextResponse(text, headers={"X-Log-Lines": str(last)})
    guard = stream_guard.open_stream(
        token=security.bearer_token(request.headers.get("authorization", "")),
        user_id=user.id,
        app_id=app.id,
        client_gone=request.is_disconnected,
    )
    db.close()  # the stream reads with sessions of its own
    return StreamingResponse(
        guard.guarded(_follow(build.id, after, guard)),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache", **_UNBUFFERED},
    )


async def _follow(build_id: int, after: int, guard: stream_guard.StreamGuard) -> AsyncIterator[str]:
    """Every line once, in order, until the build has ended and its last line was sent."""
    while await guard.ended() is None:
        rows, ended = await run_in_threadpool(_lines_after, build_id, after)
        if rows:
            after = rows[-1][0]
            yield "".join(f"{text}\n" for _, text in rows)
        if ended and not rows:
            return
        if not rows:
            await asyncio.sleep(0.25)


def _lines_after(build_id: int, after: int) -> tuple[list[tuple[int, str]], bool]:
    with get_session() as db:
        # Read the status first: lines written before it ended are all there after it
        build = db.get(Build, build_id)
        if build is None:
            return [], True
        ended = build.status not in ACTIVE_BUILD_STATUSES
        rows = records.log_lines(db=db, build_id=build_id, after=after, limit=5000)
        return [(row.line, row.text) for row in rows], ended
