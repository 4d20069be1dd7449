"""Users and their API tokens; authentication of a bearer token."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipaas import security
from minipaas.clock import now
from minipaas.db.models import ApiToken, App, User, UserRole
from minipaas.services.errors import Conflict, Forbidden, NotFound

# last_used_at is written at most this often per token, not on every request
LAST_USED_RESOLUTION = timedelta(minutes=1)


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


def authenticate(*, db: Session, token: str) -> tuple[User, ApiToken] | None:
    """The active user and token, or None. One hash and one indexed lookup either way."""
    digest = security.token_hash(token)
    row = db.execute(select(ApiToken, User).join(User).where(ApiToken.token_hash == digest)).first()
    if row is None:
        return None
    record, user = row
    moment = now()
    if record.revoked_at is not None or user.disabled:
        return None
    if record.expires_at is not None and record.expires_at <= moment:
        return None
    if record.last_used_at is None or moment - record.last_used_at > LAST_USED_RESOLUTION:
        db.execute(update(ApiToken).where(ApiToken.id == record.id).values(last_used_at=moment))
        db.commit()
    return user, record


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


def update_user(
    *, db: Session, actor: User, user_id: int, disabled: bool | None, role: UserRole | None
) -> User:
    user = get_user(db=db, user_id=user_id)
    if user.id == actor.id and (disabled or (role is not None and role is not UserRole.ADMIN)):
        raise Forbidden("admins cannot disable or demote themselves; ask another admin")
    if disabled is not None:
        user.disabled = disabled
    if role is not None:
        user.role = role
    db.commit()
    return user


def issue_token(
    *,
    db: Session,
    user: User,
    name: str,
    expires_in_days: int | None = None,
    token: str | None = None,
    not_after: datetime | None = None,
) -> IssuedToken:
    """A new token; `not_after` caps its expiry (a token cannot mint one that outlives it)."""
    token = token or security.new_token()
    expires_at = now() + timedelta(days=expires_in_days) if expires_in_days else None
    if not_after is not None and (expires_at is None or expires_at > not_after):
        expires_at = not_after
    record = ApiToken(
        user_id=user.id,
        name=name,
        prefix=security.shown_prefix(token),
        token_hash=security.token_hash(token),
        expires_at=expires_at,
    )
    db.add(record)
    db.commit()
    return IssuedToken(record=record, token=token)


def list_tokens(*, db: Session, user: User) -> Sequence[ApiToken]:
    return db.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    ).all()


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
