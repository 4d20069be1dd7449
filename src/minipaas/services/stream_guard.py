"""Open streams (followed logs, deployment events): a per-user cap and a periodic re-check.

A stream outlives the request that authorized it, so it asks again every
STREAM_RECHECK_SECONDS whether its token, its user and its app still allow it, and ends when
not. Open streams are counted per user in Redis (shared by every API process); each slot is a
lease the stream renews, so a process that dies without closing its streams frees their slots
when the leases run out.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from minipaas import security
from minipaas.clock import now
from minipaas.config import get_settings
from minipaas.db.models import ApiToken, App, User
from minipaas.db.session import get_session
from minipaas.queue import get_redis
from minipaas.services.access import readable_apps
from minipaas.services.errors import TooManyRequests

log = logging.getLogger(__name__)

# Drops expired leases, then takes a slot only under the cap: one atomic step in Redis, so two
# API processes cannot both take the last slot. KEYS[1]: the user's sorted set of leases
# (member: slot id, score: expiry in ms); ARGV: now_ms, expiry_ms, cap, slot, key_ttl_ms
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


def lease_seconds() -> float:
    """How long a slot lives without renewal: a few re-checks, so a busy loop is not cut."""
    return max(30.0, 3 * get_settings().stream_recheck_seconds)


def _key(user_id: int) -> str:
    return f"minipaas:{get_settings().instance_name}:streams:{user_id}"


def open_streams(user_id: int) -> int:
    """The user's open streams (unexpired leases), across API processes."""
    redis = get_redis()
    redis.zremrangebyscore(_key(user_id), "-inf", int(time.time() * 1000))
    return int(redis.zcard(_key(user_id)))


def _take_slot(user_id: int, lease: float) -> str | None:
    """A new slot's id, or None when the user is at the cap."""
    slot = secrets.token_hex(8)
    moment_ms = int(time.time() * 1000)
    lease_ms = int(lease * 1000)
    taken = get_redis().eval(
        _ACQUIRE,
        1,
        _key(user_id),
        moment_ms,
        moment_ms + lease_ms,
        get_settings().user_max_streams,
        slot,
        lease_ms,
    )
    return slot if int(taken) else None


def access_ended(*, token_digest: str, app_id: int) -> str | None:
    """Why the token may no longer read the app (None while it still may)."""
    try:
        with get_session() as db:
            row = db.execute(
                select(ApiToken.revoked_at, ApiToken.expires_at, User)
                .join(ApiToken.user)
                .where(ApiToken.token_hash == token_digest)
            ).first()
            if row is None:
                return "the token no longer exists"
            revoked_at, expires_at, user = row
            if revoked_at is not None:
                return "the token was revoked"
            if expires_at is not None and expires_at <= now():
                return "the token expired"
            if user.disabled:
                return "the user was disabled"
            visible = db.scalar(readable_apps(user).where(App.id == app_id))
            if visible is None:
                return "the app was deleted or is no longer yours"
    except SQLAlchemyError as exc:
        # Unchecked is not allowed: the client may reconnect once the database is back
        log.warning("stream access not re-checked (database): %s", exc)
        return "access could not be checked (database unavailable)"
    return None


@dataclass
class StreamGuard:
    """One open stream: its slot, and when it next checks its access."""

    user_id: int
    app_id: int
    token_digest: str
    slot: str | None  # None: Redis was unreachable when it opened (not counted)
    client_gone: Callable[[], Awaitable[bool]]
    recheck_seconds: float
    next_check: float = field(default=0.0)

    async def ended(self) -> str | None:
        """None while the stream may go on; else why it ends ("" when the client left)."""
        if await self.client_gone():
            return ""
        if time.monotonic() < self.next_check:
            return None
        self.next_check = time.monotonic() + self.recheck_seconds
        reason = await run_in_threadpool(
            access_ended, token_digest=self.token_digest, app_id=self.app_id
        )
        if reason is None:
            await run_in_threadpool(self._renew)
        return reason

    def _renew(self) -> None:
        if self.slot is None:
            return
        lease = lease_seconds()
        expiry_ms = int((time.time() + lease) * 1000)
        try:
            pipeline = get_redis().pipeline()
            pipeline.zadd(_key(self.user_id), {self.slot: expiry_ms}, xx=True)
            pipeline.pexpire(_key(self.user_id), int(lease * 1000))
            pipeline.execute()
        except RedisError as exc:
            log.warning("stream slot not renewed (Redis): %s", exc)

    def release(self) -> None:
        if self.slot is None:
            return
        try:
            get_redis().zrem(_key(self.user_id), self.slot)
        except RedisError as exc:  # the lease runs out by itself
            log.warning("stream slot not released (Redis): %s", exc)
        self.slot = None

    async def guarded(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """The stream's chunks; its slot is given back however it ends."""
        try:
            async for chunk in stream:
                yield chunk
        finally:
            # Not awaited: when the client leaves, Starlette cancels the stream, and any await
            # here would be cancelled too (one quick Redis call)
            self.release()


def open_stream(
    *,
    token: str,
    user_id: int,
    app_id: int,
    client_gone: Callable[[], Awaitable[bool]],
) -> StreamGuard:
    """A slot for one more stream of this user's, or 429 when they have too many open."""
    settings = get_settings()
    try:
        slot = _take_slot(user_id, lease_seconds())
    except RedisError as exc:
        # Fail open, as the auth throttle does: the stream still re-checks its access
        log.warning("stream not counted (Redis): %s", exc)
        slot = ""
    if slot is None:
        raise TooManyRequests(
            f"you have {settings.user_max_streams} streams open (followed logs or deployment "
            "events; USER_MAX_STREAMS); close one and try again",
            max(1, int(settings.stream_recheck_seconds)),
        )
    return StreamGuard(
        user_id=user_id,
        app_id=app_id,
        token_digest=security.token_hash(token),
        slot=slot or None,
        client_gone=client_gone,
        recheck_seconds=settings.stream_recheck_seconds,
        # The request was authorized just now: the first re-check is one interval away
        next_check=time.monotonic() + settings.stream_recheck_seconds,
    )
