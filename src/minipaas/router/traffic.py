"""Per-app traffic metrics counted by the router, read from its control socket.

nginx's Lua code (lua/minipaas_traffic.lua) counts every request it answers for an app in
the log phase: by status class and method, bytes sent, and a latency histogram, keyed by app
id so that route changes keep counting. Counters live in nginx's shared memory: a restart of
nginx (not a reload) starts them from zero. Latency is nginx's request time, which has a
resolution of 1 ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

# Latency bucket upper bounds in ms, used per minute for percentiles: every ms up to 10, then
# steps of at most ~12.5% (so an interpolated percentile is off by less than one step)
_MANTISSAS: tuple[int, ...] = (10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 25, 28, 30, 32, 36)
_MANTISSAS += (40, 45, 50, 56, 63, 70, 78, 87, 95)
FINE_BUCKETS_MS: tuple[int, ...] = (
    *range(1, 10),
    *(m * scale for scale in (1, 10, 100, 1000) for m in _MANTISSAS),  # 10 ms to 95 s
)
# Prometheus' buckets: few, so that a series per app stays cheap; each is a fine bound too
PROMETHEUS_BUCKETS_MS: tuple[int, ...] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10_000,
    30_000,
)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other")
# The minutes the router keeps (the current one is partial) and how long their keys live
WINDOW_MINUTES = 60
MINUTE_TTL_SECONDS = (WINDOW_MINUTES + 6) * 60
# Each nginx worker counts in its own memory and adds to the shared dict this often: counts
# are readable within this delay, and a killed worker loses at most this much
FLUSH_SECONDS = 0.25


class TrafficSource(Protocol):
    """What reads the router's counters (LuaRouter): the control socket's JSON answers."""

    def traffic_totals(self) -> Any: ...

    def traffic_minutes(self, app_id: int) -> Any: ...


@dataclass(frozen=True)
class AppTotals:
    """Cumulative since nginx started; `buckets` are counts per PROMETHEUS_BUCKETS_MS bucket,
    the last one being +Inf (not cumulative)."""

    app_id: int
    by_status_class: dict[str, int]
    by_method: dict[str, int]
    bytes_sent: int
    latency_ms_sum: int
    buckets: tuple[int, ...]
    in_flight: int

    @property
    def requests(self) -> int:
        return sum(self.by_status_class.values())


@dataclass(frozen=True)
class MinuteRollup:
    start: datetime
    requests: int
    by_status_class: dict[str, int]
    bytes_sent: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    latency_buckets: tuple[int, ...]  # per FINE_BUCKETS_MS bucket, +Inf last

    @property
    def rate_5xx(self) -> float:
        return self.by_status_class["5xx"] / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class AppTraffic:
    app_id: int
    enabled: bool
    in_flight: int
    minutes: tuple[MinuteRollup, ...]  # oldest first, every minute of the window

    def summary(self) -> MinuteRollup | None:
        """The whole window as one rollup (its start is the window's); None when disabled."""
        return rollup(self.minutes[0].start, self.minutes) if self.minutes else None


def totals(source: TrafficSource) -> dict[int, AppTotals]:
    """Every routed app's cumulative counters ({} when the router counts nothing)."""
    answer = source.traffic_totals()
    if not answer.get("enabled"):
        return {}
    found = {}
    for key, data in _mapping(answer.get("apps")).items():
        app_id = int(key)
        found[app_id] = AppTotals(
            app_id=app_id,
            by_status_class=_classes(data.get("status")),
            by_method={m: int(_mapping(data.get("methods")).get(m, 0)) for m in METHODS},
            bytes_sent=int(data.get("bytes", 0)),
            latency_ms_sum=int(data.get("latency_ms_sum", 0)),
            buckets=_bucket_counts(data.get("buckets"), len(PROMETHEUS_BUCKETS_MS)),
            in_flight=int(data.get("in_flight", 0)),
        )
    return found


def last_hour(source: TrafficSource, app_id: int) -> AppTraffic:
    """Per-minute rollups of one app for the last WINDOW_MINUTES minutes and the current one."""
    answer = source.traffic_minutes(app_id)
    if not answer.get("enabled"):
        return AppTraffic(app_id, False, 0, ())
    current = int(answer["minute"])
    seen = {int(m["minute"]): m for m in answer.get("minutes") or () if isinstance(m, dict)}
    rollups = []
    for minute in range(current - WINDOW_MINUTES, current + 1):
        data = seen.get(minute, {})
        rollups.append(
            _minute(
                datetime.fromtimestamp(minute * 60, UTC),
                _classes(data.get("status")),
                int(data.get("bytes", 0)),
                _bucket_counts(data.get("buckets"), len(FINE_BUCKETS_MS)),
            )
        )
    return AppTraffic(app_id, True, int(answer.get("in_flight", 0)), tuple(rollups))


def percentile(
    counts: Sequence[int], share: float, bounds: Sequence[int] = FINE_BUCKETS_MS
) -> float | None:
    """The `share` quantile of a histogram (counts per bucket, +Inf last), interpolated
    linearly inside its bucket as Prometheus' histogram_quantile does; None without data."""
    total = sum(counts)
    if total == 0:
        return None
    rank = share * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index >= len(bounds):  # +Inf: the best that can be said is "over the last"
                return float(bounds[-1])
            low = bounds[index - 1] if index else 0
            return low + (bounds[index] - low) * (rank - below) / count
        below += count
    return float(bounds[-1])


def rollup(start: datetime, minutes: Sequence[MinuteRollup]) -> MinuteRollup:
    """Several minutes added up; percentiles from their merged histograms."""
    classes = {name: sum(m.by_status_class[name] for m in minutes) for name in STATUS_CLASSES}
    counts = tuple(
        sum(column) for column in zip(*(m.latency_buckets for m in minutes), strict=True)
    )
    return _minute(start, classes, sum(m.bytes_sent for m in minutes), counts)


def _minute(
    start: datetime, classes: dict[str, int], bytes_sent: int, counts: tuple[int, ...]
) -> MinuteRollup:
    return MinuteRollup(
        start=start,
        requests=sum(classes.values()),
        by_status_class=classes,
        bytes_sent=bytes_sent,
        p50_ms=percentile(counts, 0.50),
        p95_ms=percentile(counts, 0.95),
        p99_ms=percentile(counts, 0.99),
        latency_buckets=counts,
    )


def _mapping(value: object) -> Mapping[str, Any]:
    # cjson writes an empty table as {}: a list or anything else counts as empty
    return value if isinstance(value, Mapping) else {}


def _classes(value: object) -> dict[str, int]:
    data = _mapping(value)
    return {f"{n}xx": int(data.get(str(n), 0)) for n in range(1, 6)}


def _bucket_counts(value: object, bounds: int) -> tuple[int, ...]:
    """Lua's sparse {"<1-based index>": count} as a dense tuple, +Inf last."""
    counts = [0] * (bounds + 1)
    for key, count in _mapping(value).items():
        index = int(key) - 1
        if 0 <= index <= bounds and math.isfinite(count):
            counts[index] += int(count)
    return tuple(counts)
