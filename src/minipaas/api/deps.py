"""Request dependencies, as Annotated aliases so no route builds them inline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from minipaas.db.models import App, User
from minipaas.db.session import new_session
from minipaas.services import audit, auth_throttle, users
from minipaas.services.access import app_for
from minipaas.services.errors import Forbidden, Unauthorized

# Ids are PostgreSQL integers: a larger number is a 422, not a database error
MAX_ID = 2**31 - 1
# Pagination of every list
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]


def _db_session() -> Iterator[Session]:
    session = new_session()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(_db_session)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _current_user(request: Request, db: SessionDep) -> User:
    """The caller, from `Authorization: Bearer <token>`; the same 401 for every failure.

    A valid token always works; a client that keeps failing gets 429 instead of 401.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    found = users.authenticate(db=db, token=token.strip() if scheme.lower() == "bearer" else "")
    if found is None:
        auth_throttle.record_failure(client_address(request))
        raise Unauthorized("missing, invalid, expired or revoked token")
    user, record = found
    caller = users.Caller(user.id, user.username, record.expires_at)
    request.state.caller = caller
    if request.method in AUDITED_METHODS:
        # Before the change runs: if it cannot be recorded, it is refused (503)
        request.state.audit_event_id = audit.open_event(
            db=db,
            actor_id=caller.user_id,
            actor=caller.username,
            action=f"{request.method} {route_template(request)}",
            target=request.url.path,
            client_ip=request.client.host if request.client else None,
        )
    return user


# Requests that change something: each is in the audit log
AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def route_template(request: Request) -> str:
    """The matched route's path ("/apps/{app_id}"), or the path itself when none matched."""
    return str(getattr(request.scope.get("route"), "path", request.url.path))


CurrentUser = Annotated[User, Depends(_current_user)]


def _caller(request: Request, _: CurrentUser) -> users.Caller:
    caller: users.Caller = request.state.caller
    return caller


Caller = Annotated[users.Caller, Depends(_caller)]


def _admin(user: CurrentUser) -> User:
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
    return found is not None and found[0].is_admin


OptionalAdmin = Annotated[bool, Depends(_optional_admin)]


def _visible_app(
    app_id: Annotated[int, Path(ge=1, le=MAX_ID, description="the app's id")],
    user: CurrentUser,
    db: SessionDep,
) -> App:
    return app_for(db=db, user=user, app_id=app_id)


# Every /apps/{app_id}... route depends on this: another user's app is a 404
VisibleApp = Annotated[App, Depends(_visible_app)]
