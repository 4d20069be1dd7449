"""Users and their API tokens; authentication of a bearer token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, Update, and_, bindparam, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, make_transient_to_detached

from minipaas import security
from minipaas.clock import now
from minipaas.config import get_settings
from minipaas.db.driver_reads import DriverRead
from minipaas.db.models import ApiToken, App, User, UserRole
from minipaas.services.app_rows import APP_COLUMNS, app_row
from minipaas.services.errors import Conflict, Forbidden, NotFound

# last_used_at is written at most this often per token, not on every request
LAST_USED_RESOLUTION = timedelta(minutes=1)
# PostgreSQL advisory lock (two keys: "mu", 0) over who is an active admin: a change of
# standing takes it exclusively, minting a token shares it
_STANDING_LOCK = (0x6D75, 0)


@dataclass(frozen=True)
class IssuedToken:
    record: ApiToken
    token: str  # shown once, never stored


@dataclass(frozen=True)
class Caller:
    """Plain values about who is calling: safe to read after any session rollback."""

    user_id: int
    username: str
    token_expires_at: datetime | None


@dataclass(frozen=True)
class Authenticated:
    """Who a valid token belongs to, and the token's own values the request needs."""

    user: User
    token_id: int
    token_expires_at: datetime | None
    # With `app_id`: that app's columns (app_rows.APP_COLUMNS) if this user may see it
    app: dict[str, Any] | None = None


_TOKENS = ApiToken.__table__
_USERS = User.__table__
_APPS = App.__table__
# One Core statement, compiled once: the token's state and its user's row as plain values
# (building two ORM objects for it cost more than the query itself). Labelled so that none
# shares a name with an app's column.
_TOKEN_LOOKUP = (
    select(
        _TOKENS.c.id.label("token_id"),
        _TOKENS.c.revoked_at.label("token_revoked_at"),
        _TOKENS.c.expires_at.label("token_expires_at"),
        _TOKENS.c.last_used_at.label("token_last_used_at"),
        _USERS.c.id.label("user_id"),
        _USERS.c.username.label("user_username"),
        _USERS.c.role.label("user_role"),
        _USERS.c.disabled.label("user_disabled"),
        _USERS.c.created_at.label("user_created_at"),
    )
    .join_from(_TOKENS, _USERS, _TOKENS.c.user_id == _USERS.c.id)
    .where(_TOKENS.c.token_hash == bindparam("digest"))
)
# The same, plus the app a /apps/{app_id} route asks for when the token's user may see it
# (the rule of access.readable_apps), as plain values: one round trip instead of two
_TOKEN_AND_APP_LOOKUP = _TOKEN_LOOKUP.add_columns(*APP_COLUMNS).outerjoin(
    _APPS,
    and_(
        _APPS.c.id == bindparam("app_id"),
        or_(_USERS.c.role == UserRole.ADMIN, _APPS.c.owner_id == _USERS.c.id),
    ),
)
# Every request runs one of the two: on the driver's cursor (db.driver_reads)
_TOKEN_READ = DriverRead(_TOKEN_LOOKUP)
_TOKEN_AND_APP_READ = DriverRead(_TOKEN_AND_APP_LOOKUP)


@dataclass(frozen=True)
class TokenCheck:
    """A valid token's own values and its user's row, as plain values; with an app id, that
    app's columns (app_rows.APP_COLUMNS) if the user may see it."""

    token_id: int
    token_expires_at: datetime | None
    user_id: int
    username: str
    role: UserRole
    disabled: bool
    user_created_at: datetime
    app: dict[str, Any] | None

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.ADMIN


def check_token(
    db: Session | Connection, token: str, app_id: int | None = None
) -> TokenCheck | None:
    """The token's values if it is valid and its user active, else None. One hash and one
    indexed lookup either way, read from the database on every call (no cache: a revoked or
    expired token, or a disabled user, is refused on the very next request). With `app_id`,
    the same query reads that app when the user may see it."""
    connection = db.connection() if isinstance(db, Session) else db
    lookup, params = _lookup(token, app_id)
    check, touch = _checked(lookup, lookup.first(connection, params), app_id)
    if touch is not None:
        db.execute(touch)
        db.commit()
    return check


async def check_token_async(
    connection: AsyncConnection, token: str, app_id: int | None = None
) -> TokenCheck | None:
    """check_token() on the event loop, on an autocommit connection (async_read_engine)."""
    lookup, params = _lookup(token, app_id)
    check, touch = _checked(lookup, await lookup.first_async(connection, params), app_id)
    if touch is not None:
        await connection.execute(touch)
    return check


def _lookup(token: str, app_id: int | None) -> tuple[DriverRead, dict[str, Any]]:
    params: dict[str, Any] = {"digest": security.token_hash(token)}
    if app_id is None:
        return _TOKEN_READ, params
    return _TOKEN_AND_APP_READ, params | {"app_id": app_id}


def _checked(
    lookup: DriverRead, found: tuple[Any, ...] | None, app_id: int | None
) -> tuple[TokenCheck | None, Update | None]:
    """The check, and the write of the token's last use when it is due (at most once a
    LAST_USED_RESOLUTION, not on every request)."""
    if found is None:
        return None, None
    row = dict(zip(lookup.names, found, strict=True))
    moment = now()
    if row["token_revoked_at"] is not None or row["user_disabled"]:
        return None, None
    expires_at = row["token_expires_at"]
    if expires_at is not None and expires_at <= moment:
        return None, None
    last_used = row["token_last_used_at"]
    touch = None
    if last_used is None or moment - last_used > LAST_USED_RESOLUTION:
        touch = update(ApiToken).where(ApiToken.id == row["token_id"]).values(last_used_at=moment)
    check = TokenCheck(
        token_id=row["token_id"],
        token_expires_at=expires_at,
        user_id=row["user_id"],
        username=row["user_username"],
        role=row["user_role"],
        disabled=row["user_disabled"],
        user_created_at=row["user_created_at"],
        app=app_row(row) if app_id is not None and row["id"] is not None else None,
    )
    return check, touch


def authenticate(*, db: Session, token: str, app_id: int | None = None) -> Authenticated | None:
    """check_token, with the user as an ORM object of this session."""
    check = check_token(db, token, app_id)
    if check is None:
        return None
    return Authenticated(attach_user(db, check), check.token_id, check.token_expires_at, check.app)


def attach_user(db: Session, check: TokenCheck) -> User:
    """The checked token's user in this session as if it had loaded the row (no query)."""
    user = User(
        id=check.user_id,
        username=check.username,
        role=check.role,
        disabled=check.disabled,
        created_at=check.user_created_at,
    )
    return _persistent(db, user)


def _persistent(db: Session, user: User) -> User:
    """The user in this session as if it had loaded the row (no second query), so routes
    and services use it as before; the session's own copy if it has one already."""
    known = db.identity_map.get(db.identity_key(User, user.id))
    if isinstance(known, User):
        return known
    make_transient_to_detached(user)
    db.add(user)
    return user


def create_user(*, db: Session, username: str, role: UserRole) -> User:
    user = User(username=username, role=role, disabled=False)
    db.add(user)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise Conflict(f"a user named '{username}' already exists") from None
    return user


def get_user(*, db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    return user


def list_users(*, db: Session, limit: int, offset: int) -> tuple[Sequence[User], int]:
    total = db.scalar(select(func.count()).select_from(User)) or 0
    rows = db.scalars(select(User).order_by(User.id).limit(limit).offset(offset)).all()
    return rows, total


def _lock_standing(db: Session, *, shared: bool) -> None:
    """Until this transaction ends. Without it, two admins demoting each other at once both
    pass the checks on what they read before the other committed, and no admin is left."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    db.execute(text(f"SELECT {function}(:a, :b)"), {"a": _STANDING_LOCK[0], "b": _STANDING_LOCK[1]})


def _fresh_user(db: Session, user_id: int) -> User | None:
    # populate_existing: the caller's row as the database has it now, not as auth read it
    return db.get(User, user_id, populate_existing=True)


def _is_active_admin(user: User | None) -> bool:
    return user is not None and user.is_admin and not user.disabled


def update_user(
    *,
    db: Session,
    actor: User,
    user_id: int,
    disabled: bool | None,
    role: UserRole | None,
    actor_token_id: int | None = None,
) -> User:
    """Disable/enable or change the role of a user. An admin who loses their standing
    (disabled or demoted) takes the tokens they minted for others with them; so an admin
    may not take it from the one their own token (`actor_token_id`) rests on."""
    if user_id == actor.id and (disabled or (role is not None and role is not UserRole.ADMIN)):
        raise Forbidden("admins cannot disable or demote themselves; ask another admin")
    _lock_standing(db, shared=False)
    if not _is_active_admin(_fresh_user(db, actor.id)):
        raise Forbidden("you are no longer an active admin")
    user = _fresh_user(db, user_id)
    if user is None:
        raise NotFound(f"user {user_id} does not exist")
    was_admin = _is_active_admin(user)
    if disabled is not None:
        user.disabled = disabled
    if role is not None:
        user.role = role
    if was_admin and not _is_active_admin(user):
        db.flush()
        if not db.scalar(_active_admins()):
            db.rollback()
            raise Conflict(f"user {user_id} is the last active admin; promote another first")
        _refuse_if_it_ends_the_callers_token(db, actor_token_id, user)
        _revoke_issued_by(db, user.id)
    db.commit()
    return user


def _refuse_if_it_ends_the_callers_token(db: Session, token_id: int | None, user: User) -> None:
    """Revoking the tokens that rest on `user` would end the caller's own: a promoted admin
    disabling the admin who minted their token locked themselves out, and with them every
    admin left (found with two admins: nobody could log in to undo it)."""
    issuer = db.scalar(select(ApiToken.issued_by_id).where(ApiToken.id == token_id))
    if token_id is not None and issuer == user.id:
        db.rollback()
        raise Conflict(
            f"your own token rests on {user.username}'s authority (they minted it, or the "
            "token you made it with): this change would revoke it; ask an admin whose "
            f"token does not rest on {user.username}"
        )


def _active_admins() -> Select[int]:
    return select(func.count()).where(User.role == UserRole.ADMIN, User.disabled.is_(False))


def _revoke_issued_by(db: Session, issuer_id: int) -> None:
    """Tokens that rest on this admin's authority, except their own (those follow `disabled`)."""
    db.execute(
        update(ApiToken)
        .where(
            ApiToken.issued_by_id == issuer_id,
            ApiToken.user_id != issuer_id,
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=now())
    )


def issue_token(
    *,
    db: Session,
    user: User,
    name: str,
    expires_in_days: int | None = None,
    token: str | None = None,
    not_after: datetime | None = None,
    issued_by_id: int | None = None,
) -> IssuedToken:
    """A new token; `not_after` caps its expiry (a token cannot mint one that outlives it);
    `issued_by_id`: the admin whose authority it rests on (it is revoked when they lose it)."""
    _lock_standing(db, shared=True)
    # The owner's row, locked: counting their tokens and adding one is one step per user
    db.execute(select(User.id).where(User.id == user.id).with_for_update())
    if issued_by_id is not None and not _is_active_admin(_fresh_user(db, issued_by_id)):
        # Checked under the lock: a mint racing the issuer's disabling cannot slip past it
        raise Forbidden("the admin this token would rest on is no longer an active admin")
    moment = now()
    active = db.scalar(
        select(func.count())
        .select_from(ApiToken)
        .where(
            ApiToken.user_id == user.id,
            ApiToken.revoked_at.is_(None),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > moment),
        )
    )
    cap = get_settings().user_max_tokens
    if (active or 0) >= cap:
        username = user.username  # read before the rollback expires it
        db.rollback()
        raise Conflict(
            f"user '{username}' has {cap} active tokens (USER_MAX_TOKENS); "
            "revoke one (DELETE /tokens/{id}) before making another"
        )
    token = token or security.new_token()
    expires_at = moment + timedelta(days=expires_in_days) if expires_in_days else None
    if not_after is not None and (expires_at is None or expires_at > not_after):
        expires_at = not_after
    record = ApiToken(
        user_id=user.id,
        name=name,
        prefix=security.shown_prefix(token),
        token_hash=security.token_hash(token),
        expires_at=expires_at,
        issued_by_id=issued_by_id,
    )
    db.add(record)
    db.commit()
    return IssuedToken(record=record, token=token)


def issue_own_token(
    *, db: Session, user: User, name: str, expires_in_days: int | None, parent_token: str
) -> IssuedToken:
    """A token made with another of the caller's: no later expiry, and the same issuer, so a
    token an admin minted for someone cannot be swapped for one that outlives that admin."""
    parent = db.scalar(
        select(ApiToken).where(ApiToken.token_hash == security.token_hash(parent_token))
    )
    return issue_token(
        db=db,
        user=user,
        name=name,
        expires_in_days=expires_in_days,
        not_after=parent.expires_at if parent is not None else None,
        issued_by_id=parent.issued_by_id if parent is not None else None,
    )


def issue_token_for(
    *,
    db: Session,
    admin: User,
    user_id: int,
    name: str,
    expires_in_days: int | None,
    parent_token: str,
) -> IssuedToken:
    """An admin's token for a user; refused for another admin (a token for a peer would let
    one admin act as another), and revoked when the minting admin is disabled or demoted."""
    user = get_user(db=db, user_id=user_id)
    if user.id == admin.id:
        return issue_own_token(
            db=db, user=user, name=name, expires_in_days=expires_in_days, parent_token=parent_token
        )
    if user.is_admin:
        raise Forbidden(f"user {user_id} is an admin: admins make their own tokens (POST /tokens)")
    return issue_token(
        db=db, user=user, name=name, expires_in_days=expires_in_days, issued_by_id=admin.id
    )


def list_tokens(
    *, db: Session, user: User, limit: int, offset: int
) -> tuple[Sequence[ApiToken], int]:
    """A page of the user's tokens, oldest first, and how many there are in all."""
    owned = ApiToken.user_id == user.id
    total = db.scalar(select(func.count()).select_from(ApiToken).where(owned)) or 0
    rows = db.scalars(
        select(ApiToken).where(owned).order_by(ApiToken.id).limit(limit).offset(offset)
    ).all()
    return rows, total


def revoke_token(*, db: Session, user: User, token_id: int) -> ApiToken:
    record = db.get(ApiToken, token_id)
    if record is None or record.user_id != user.id:
        raise NotFound(f"token {token_id} does not exist")
    if record.revoked_at is None:
        record.revoked_at = now()
        db.commit()
    return record


@dataclass(frozen=True)
class Bootstrap:
    created: bool
    username: str
    token: str | None  # the new admin's token when one was created


def bootstrap_admin(*, db: Session, token: str | None) -> Bootstrap:
    """When there are no users: an admin with ADMIN_TOKEN (or a new token). Apps without an
    owner (from before users existed) go to the first admin."""
    existing = db.scalar(select(User).where(User.role == UserRole.ADMIN).order_by(User.id))
    if existing is not None:
        _adopt_orphans(db, existing)
        return Bootstrap(created=False, username=existing.username, token=None)
    if db.scalar(select(func.count()).select_from(User)):
        raise Conflict("users exist but none is an admin; promote one with the database")
    admin = create_user(db=db, username="admin", role=UserRole.ADMIN)
    issued = issue_token(db=db, user=admin, name="bootstrap", token=token)
    _adopt_orphans(db, admin)
    return Bootstrap(created=True, username=admin.username, token=issued.token)


def _adopt_orphans(db: Session, admin: User) -> None:
    db.execute(update(App).where(App.owner_id.is_(None)).values(owner_id=admin.id))
    db.commit()
