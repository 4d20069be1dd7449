"""Users (admins manage them), the caller's own tokens, and the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from minipaas import security
from minipaas.api.deps import MAX_ID, AdminUser, CurrentUser, Limit, Offset, SessionDep
from minipaas.api.responses import ADMIN, BODY, errors
from minipaas.api.schemas import (
    AuditEventOut,
    IssuedTokenOut,
    TokenCreate,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from minipaas.db.models import ApiToken
from minipaas.services import audit, users

router = APIRouter(tags=["users"])

UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _caller_token(request: Request) -> str:
    return security.bearer_token(request.headers.get("authorization", ""))


def _issued(issued: users.IssuedToken) -> IssuedTokenOut:
    shown = TokenOut.model_validate(issued.record).model_dump()
    return IssuedTokenOut(**shown, token=issued.token)


@router.get("/me", response_model=UserOut, responses=errors())
def me(user: CurrentUser) -> UserOut:
    """The caller."""
    return UserOut.model_validate(user)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=errors(*ADMIN, *BODY, 409, s409="a user of that name exists"),
)
def create_user(body: UserCreate, _: AdminUser, db: SessionDep) -> UserOut:
    """Create a user (admin); give them a token with POST /users/{id}/tokens."""
    return UserOut.model_validate(users.create_user(db=db, username=body.username, role=body.role))


@router.get("/users", response_model=list[UserOut], responses=errors(*ADMIN))
def list_users(
    _: AdminUser, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[UserOut]:
    """All users (admin)."""
    rows, total = users.list_users(db=db, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [UserOut.model_validate(row) for row in rows]


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    responses=errors(
        *ADMIN,
        *BODY,
        404,
        409,
        s403="admins only, and not on themselves",
        s404="no such user",
        s409="the last active admin, or the admin the caller's own token rests on",
    ),
)
def update_user(
    user_id: UserId, body: UserUpdate, admin: AdminUser, db: SessionDep, request: Request
) -> UserOut:
    """Disable or enable a user, or change their role (admin)."""
    check: users.TokenCheck = request.state.token_check  # set when the token was checked
    return UserOut.model_validate(
        users.update_user(
            db=db,
            actor=admin,
            user_id=user_id,
            disabled=body.disabled,
            role=body.role,
            actor_token_id=check.token_id,
        )
    )


@router.post(
    "/users/{user_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=IssuedTokenOut,
    responses=errors(
        *ADMIN,
        *BODY,
        404,
        409,
        s403="admins only; and admins make their own tokens",
        s404="no such user",
        s409="the user has USER_MAX_TOKENS active tokens",
    ),
)
def issue_user_token(
    user_id: UserId, body: TokenCreate, admin: AdminUser, request: Request, db: SessionDep
) -> IssuedTokenOut:
    """Issue a token for a member (admin); the token is in this answer only. 403 for another
    admin; the token is revoked when the issuing admin is disabled or demoted."""
    return _issued(
        users.issue_token_for(
            db=db,
            admin=admin,
            user_id=user_id,
            name=body.name,
            expires_in_days=body.expires_in_days,
            parent_token=_caller_token(request),
        )
    )


@router.get(
    "/users/{user_id}/tokens",
    response_model=list[TokenOut],
    responses=errors(*ADMIN, 404, s404="no such user"),
)
def list_user_tokens(
    user_id: UserId,
    _: AdminUser,
    db: SessionDep,
    response: Response,
    limit: Limit = 50,
    offset: Offset = 0,
) -> list[TokenOut]:
    """A user's tokens, oldest first (admin; never the tokens themselves)."""
    user = users.get_user(db=db, user_id=user_id)
    return _token_page(users.list_tokens(db=db, user=user, limit=limit, offset=offset), response)


def _token_page(page: tuple[Sequence[ApiToken], int], response: Response) -> list[TokenOut]:
    rows, total = page
    response.headers["X-Total-Count"] = str(total)
    return [TokenOut.model_validate(row) for row in rows]


@router.delete(
    "/users/{user_id}/tokens/{token_id}",
    response_model=TokenOut,
    responses=errors(*ADMIN, 404, s404="no such user, or no such token of theirs"),
)
def revoke_user_token(user_id: UserId, token_id: TokenId, _: AdminUser, db: SessionDep) -> TokenOut:
    """Revoke one of a user's tokens (admin), e.g. a leaked one."""
    user = users.get_user(db=db, user_id=user_id)
    return TokenOut.model_validate(users.revoke_token(db=db, user=user, token_id=token_id))


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=IssuedTokenOut,
    responses=errors(
        *BODY,
        403,
        409,
        s403="the admin this token would rest on is no longer an active admin",
        s409="the caller has USER_MAX_TOKENS active tokens",
    ),
)
def create_token(
    body: TokenCreate, user: CurrentUser, request: Request, db: SessionDep
) -> IssuedTokenOut:
    """Create a token for the caller, expiring no later than the token used to ask (and
    revoked with it if an admin's standing ends); 409 past USER_MAX_TOKENS active tokens."""
    return _issued(
        users.issue_own_token(
            db=db,
            user=user,
            name=body.name,
            expires_in_days=body.expires_in_days,
            parent_token=_caller_token(request),
        )
    )


@router.get("/tokens", response_model=list[TokenOut], responses=errors())
def list_tokens(
    user: CurrentUser, db: SessionDep, response: Response, limit: Limit = 50, offset: Offset = 0
) -> list[TokenOut]:
    """The caller's tokens, oldest first (never the tokens themselves)."""
    return _token_page(users.list_tokens(db=db, user=user, limit=limit, offset=offset), response)


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenOut,
    responses=errors(404, s404="no such token of the caller's"),
)
def revoke_token(token_id: TokenId, user: CurrentUser, db: SessionDep) -> TokenOut:
    """Revoke one of the caller's tokens; it stops working with the next request."""
    return TokenOut.model_validate(users.revoke_token(db=db, user=user, token_id=token_id))


@router.get("/audit", response_model=list[AuditEventOut], responses=errors(*ADMIN))
def audit_log(
    _: AdminUser, db: SessionDep, response: Response, limit: Limit = 100, offset: Offset = 0
) -> list[AuditEventOut]:
    """Who did what, newest first (admin)."""
    rows, total = audit.list_events(db=db, limit=limit, offset=offset)
    response.headers["X-Total-Count"] = str(total)
    return [AuditEventOut.model_validate(row) for row in rows]
