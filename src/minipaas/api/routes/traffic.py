"""An app's traffic as the router counts it: per-minute rollups for the last hour."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from minipaas.api.deps import VisibleApp, _visible_app_row
from minipaas.api.responses import APP_ITEM, errors
from minipaas.api.schemas import AppTrafficOut, TrafficMinuteOut
from minipaas.router import traffic
from minipaas.router.errors import RouterError
from minipaas.services.errors import Unavailable
from minipaas.services.routing import get_router

# Like every route under /apps/{app_id}: the caller must be able to see the app (else 404)
router = APIRouter(prefix="/apps/{app_id}", tags=["apps"], dependencies=[Depends(_visible_app_row)])


@router.get(
    "/metrics",
    response_model=AppTrafficOut,
    responses=errors(*APP_ITEM, s503="the router's counters could not be read"),
)
def app_traffic(app: VisibleApp) -> AppTrafficOut:
    """Requests, 5xx rate and p50/p95/p99 latency per minute for the last hour (router-side)."""
    try:
        found = traffic.last_hour(get_router(), app.id)
    except RouterError as exc:
        raise Unavailable(f"the router's traffic counters are not readable now: {exc}") from exc
    total = found.summary()
    return AppTrafficOut(
        app_id=app.id,
        enabled=found.enabled,
        in_flight=found.in_flight,
        total=_minute_out(total) if total else None,
        minutes=[_minute_out(minute) for minute in found.minutes],
    )


def _minute_out(minute: traffic.MinuteRollup) -> TrafficMinuteOut:
    return TrafficMinuteOut(
        start=minute.start,
        requests=minute.requests,
        status_classes=minute.by_status_class,
        rate_5xx=round(minute.rate_5xx, 4),
        bytes_sent=minute.bytes_sent,
        p50_ms=_ms(minute.p50_ms),
        p95_ms=_ms(minute.p95_ms),
        p99_ms=_ms(minute.p99_ms),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
