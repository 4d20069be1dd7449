"""Slows down repeated failed authentication from one client (counted in Redis)."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from minipaas.config import get_settings
from minipaas.queue import get_redis
from minipaas.services.errors import TooManyRequests

log = logging.getLogger(__name__)
WINDOW_SECONDS = 60


def _key(client: str) -> str:
    return f"minipaas:{get_settings().instance_name}:auth-failures:{client}"


def record_failure(client: str) -> None:
    """Counts a failed attempt; past the limit the caller gets 429 instead of 401."""
    key = _key(client)
    try:
        pipeline = get_redis().pipeline()
        pipeline.incr(key)
        pipeline.expire(key, WINDOW_SECONDS, nx=True)
        pipeline.ttl(key)
        failures, _, ttl = pipeline.execute()
    except RedisError as exc:
        log.warning("auth failure not counted (Redis): %s", exc)  # fail open, auth still holds
        return
    if int(failures) > get_settings().auth_failures_per_minute:
        retry_after = max(int(ttl), 1)
        raise TooManyRequests(
            f"too many failed authentication attempts; retry in {retry_after} s", retry_after
        )
