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


def check_allowed(client: str) -> None:
    """429 while this client has failed too often in the current window."""
    try:
        redis = get_redis()
        failures = int(redis.get(_key(client)) or 0)
        if failures < get_settings().auth_failures_per_minute:
            return
        retry_after = max(int(redis.ttl(_key(client))), 1)
    except RedisError as exc:
        log.warning("auth throttling unavailable (Redis): %s", exc)  # fail open, auth still holds
        return
    raise TooManyRequests(
        f"too many failed authentication attempts; retry in {retry_after} s", retry_after
    )


def record_failure(client: str) -> None:
    try:
        pipeline = get_redis().pipeline()
        pipeline.incr(_key(client))
        pipeline.expire(_key(client), WINDOW_SECONDS, nx=True)
        pipeline.execute()
    except RedisError as exc:
        log.warning("auth failure not counted (Redis): %s", exc)
