"""Request dependencies, as Annotated aliases so no route builds them inline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Path, Query, Request
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from minipaas.db.models import App, User
from minipaas.db.session import (
    async_read_engine,
    autocommit,
    new_read_session,
    new_session,
    read_engine,
)
from minipaas.services import apps, audit, auth_throttle, users
from minipaas.services.errors import Forbidden, NotFound, Unauthorized

# Ids are PostgreSQL integers: a larger number is a 422, not a database error
MAX_ID = 2**31 - 1
_ID_DIGITS = 32
# Pagination of every list
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]


# An app's columns by name (services.app_rows)
AppRow = dict[str, Any]

# Requests that only read: their session commits each statement by itself (no transaction)
READ_METHODS = frozenset({"GET", "HEAD"})


async def _db_session(request: Request) -> AsyncIterator[Session]:
    """No I/O on the event loop: a session connects on its first query (in a worker thread),
    and a read session gives its connection back without a round trip."""
    reading = request.method in READ_METHODS
    session = new_read_session() if reading else new_session()
    try:
        yield session
    finally:
        if reading:
            session.close()
        else:
            await run_in_threadpool(session.close)  # a ROLLBACK may be due


SessionDep = Annotated[Session, Depends(_db_session)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _current_user(request: Request, db: SessionDep) -> User:
    """The caller, from `Authorization: Bearer <token>`, checked against the database on every
    request (no cache: a revoked token or disabled user is refused at once)."""
    check: users.TokenCheck | None = getattr(request.state, "token_check", None)
    if check is not None:  # checked already in this request (_token_check): no second query
        return users.attach_user(db, check)
    return await run_in_threadpool(_authenticate, request, db)


def _authenticate(request: Request, db: Session) -> User:
    check = _check_bearer(request, db, _app_id(request.path_params.get("app_id")))
    if check is None:
        _refuse(request)
    _open_audit_event(request)
    return users.attach_user(db, check)


async def _token_check(request: Request) -> users.TokenCheck:
    """As _current_user, without a session or a User object: on a pooled connection of its
    own, which a GET of one app needs for nothing else (no ORM session to set up and close)."""
    check: users.TokenCheck | None = getattr(request.state, "token_check", None)
    if check is None:
        check = await _authenticated(request)
    return check


async def _authenticated(request: Request, app_id: int | None = None) -> users.TokenCheck:
    """_authenticate_alone: a read (GET, HEAD) on the event loop, with no worker thread; a
    write in a worker thread, as its token check and audit record use the sync pool."""
    if request.method not in READ_METHODS:
        return await run_in_threadpool(_authenticate_alone, request, app_id)
    wanted = app_id or _app_id(request.path_params.get("app_id"))
    async with async_read_engine().connect() as connection:
        check = await users.check_token_async(connection, _bearer(request), wanted)
    if check is None:  # the connection is back first: the throttle may wait on Redis
        await run_in_threadpool(_refuse, request)
    _remember(request, check, wanted)
    return check


# The caller's checked token, for reads that need no session and no User object
TokenChecked = Annotated[users.TokenCheck, Depends(_token_check)]


def _authenticate_alone(request: Request, app_id: int | None = None) -> users.TokenCheck:
    with read_engine().connect() as connection:
        path_app_id = _app_id(request.path_params.get("app_id"))
        check = _check_bearer(request, connection, app_id or path_app_id)
    if check is None:  # the connection is back first: the throttle may wait on Redis
        _refuse(request)
    opened = getattr(request.state, "audit_event_id", None) is not None  # read again: once
    if request.method in AUDITED_METHODS and not opened:
        _open_audit_event(request)
    return check


def _check_bearer(
    request: Request, db: Session | Connection, app_id: int | None
) -> users.TokenCheck | None:
    """The token's values, kept on the request, or None when it is not valid. A route under
    /apps/{app_id} reads that app next (_visible_app_row): the token's query reads it too,
    one round trip instead of two."""
    check = users.check_token(db, _bearer(request), app_id)
    if check is not None:
        _remember(request, check, app_id)
    return check


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _remember(request: Request, check: users.TokenCheck, app_id: int | None) -> None:
    """The checked token's values on the request, for the dependencies and the log after."""
    request.state.token_check = check
    request.state.caller = users.Caller(check.user_id, check.username, check.token_expires_at)
    if app_id is not None:
        visible: AppRow | NotFound = check.app or NotFound(f"app {app_id} does not exist")
        request.state.visible_app = (app_id, visible)


def _refuse(request: Request) -> NoReturn:
    """The same 401 for every failure; a client that keeps failing gets 429 instead."""
    auth_throttle.record_failure(client_address(request))
    raise Unauthorized("missing, invalid, expired or revoked token")


def _app_id(value: str | None) -> int | None:
    """The path's app id when _visible_app_row will accept it (else it answers 422)."""
    # The length first: int() refuses strings of over 4,300 digits (a 500 before any token
    # was checked); leading zeros aside, no id has more digits than MAX_ID
    if value is None or len(value) > _ID_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    if not 1 <= int(value) <= MAX_ID:
        return None
    return int(value)


def _open_audit_event(request: Request) -> None:
    """A write's audit event, before the change runs: if it cannot be recorded, the change is
    refused (503). Committed by itself, on a connection of the autocommit pool."""
    if request.method not in AUDITED_METHODS:
        return
    caller: users.Caller = request.state.caller
    with autocommit() as connection:
        request.state.audit_event_id = audit.open_event(
            connection=connection,
            actor_id=caller.user_id,
            actor=caller.username,
            action=f"{request.method} {route_template(request)}",
            target=request.url.path,
            client_ip=request.client.host if request.client else None,
        )


# Requests that change something: each is in the audit log
AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def route_template(request: Request) -> str:
    """The matched route's path ("/apps/{app_id}"), or the path itself when none matched."""
    return str(getattr(request.scope.get("route"), "path", request.url.path))


CurrentUser = Annotated[User, Depends(_current_user)]


# Dependencies without I/O are async: a sync one would cost a worker-thread hop each
async def _caller(request: Request, _: CurrentUser) -> users.Caller:
    caller: users.Caller = request.state.caller
    return caller


Caller = Annotated[users.Caller, Depends(_caller)]


async def _admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("only admins may do this")
    return user


AdminUser = Annotated[User, Depends(_admin)]


def _optional_admin(request: Request, db: SessionDep) -> bool:
    """Whether the caller is an admin, for routes anyone may call (health).

    A missing, wrong or uncheckable token (the database is down) means "anonymous", never
    401 or 500: probes must keep getting their 200/503.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        found = users.authenticate(db=db, token=token.strip())
    except SQLAlchemyError:
        return False
    return found is not None and found.user.is_admin


OptionalAdmin = Annotated[bool, Depends(_optional_admin)]


async def _visible_app_row(
    app_id: Annotated[int, Path(ge=1, le=MAX_ID, description="the app's id")],
    request: Request,
    _: TokenChecked,  # a sub-dependency: solved first, so a bad token is a 401 before a 422
) -> AppRow:
    """The app's columns if the caller may see it (else 404), as read with the token."""
    prefetched: tuple[int, AppRow | NotFound] | None = getattr(request.state, "visible_app", None)
    if prefetched is None or prefetched[0] != app_id:
        # An id written another way ("+5"): read with the token again, by the parsed id
        await _authenticated(request, app_id)
        prefetched = request.state.visible_app
    if isinstance(prefetched[1], NotFound):
        raise prefetched[1]
    return prefetched[1]


# Every /apps/{app_id}... route depends on this: another user's app is a 404
VisibleAppRow = Annotated[AppRow, Depends(_visible_app_row)]


async def _visible_app_id(row: VisibleAppRow) -> int:
    return int(row["id"])


# The app's id once the caller may see it, for routes that hand services only the id: no
# ORM load of the app (two statements and ~35 columns) beyond the token's own query
VisibleAppId = Annotated[int, Depends(_visible_app_id)]


async def _visible_app(
    app_id: Annotated[int, Path(ge=1, le=MAX_ID, description="the app's id")],
    _: VisibleAppRow,
    user: CurrentUser,
    db: SessionDep,
) -> App:
    # Loaded whole (with its domains) in the worker thread: routes may read it on the loop
    return await run_in_threadpool(apps.get_visible_app, db=db, user=user, app_id=app_id)


# The app as an ORM object, for routes that change it or hand it to services
VisibleApp = Annotated[App, Depends(_visible_app)]
