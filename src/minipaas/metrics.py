"""Prometheus metrics of the platform itself.

The API (several uvicorn processes) and the worker write to one multiprocess directory,
DATA_DIR/run/metrics; the `api` and `worker` commands point PROMETHEUS_MULTIPROC_DIR at it
before anything imports prometheus_client.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from minipaas.router.traffic import AppTotals

HTTP_REQUESTS = Counter(
    "minipaas_http_requests_total", "API requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "minipaas_http_request_duration_seconds",
    "API request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One API request in HTTP_REQUESTS and HTTP_LATENCY."""
    requests, latency = _request_series(method, route, status)
    requests.inc()
    latency.observe(seconds)


@lru_cache(maxsize=4096)
def _request_series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """The labelled series, looked up once each rather than on every request."""
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(method, route)


DEPLOYMENTS = Counter("minipaas_deployments_total", "Ended deployments", ["outcome"])
DEPLOYMENT_DURATION = Histogram(
    "minipaas_deployment_duration_seconds",
    "Time from a deployment's start to its end",
    ["outcome"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
RECONCILER_ACTIONS = Counter(
    "minipaas_reconciler_actions_total", "Repairs made by the reconciler", ["step"]
)
ROUTER_RELOADS = Counter(
    "minipaas_router_reloads_total", "nginx started or reloaded (static config changes only)"
)
ROUTE_UPDATES = Counter(
    "minipaas_router_route_updates_total",
    "Route changes sent to nginx's memory (no reload), by outcome",
    ["outcome"],
)


class PlatformStateCollector(Collector):
    """Gauges read from the source of truth at scrape time: apps by status, queue depth."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sqlalchemy import func, select

        from minipaas.db.models import App, AppStatus
        from minipaas.db.session import get_session
        from minipaas.queue import get_queue

        apps = GaugeMetricFamily("minipaas_apps", "Apps by status", labels=["status"])
        try:
            with get_session() as db:
                rows = db.execute(select(App.status, func.count()).group_by(App.status)).all()
        except Exception:  # database down: no sample rather than a failed scrape
            rows = None
        if rows is not None:
            counts = dict(rows)
            for status in AppStatus:
                apps.add_metric([status.value], float(counts.get(status, 0)))
            yield apps
        yield from _last_backup()
        depth = GaugeMetricFamily("minipaas_queue_depth", "Jobs waiting in the queue")
        try:
            depth.add_metric([], float(get_queue().count))
        except Exception:  # Redis down: no sample rather than a failed scrape
            return
        yield depth


def _last_backup() -> Iterator[GaugeMetricFamily]:
    """When `minipaas platform backup` last wrote an archive here (no sample: never)."""
    from minipaas.config import get_settings
    from minipaas.host.backup_record import read_last_backup

    last = read_last_backup(get_settings())
    if last is None:
        return
    finished = GaugeMetricFamily(
        "minipaas_last_backup_timestamp_seconds", "When the last backup made here ended"
    )
    finished.add_metric([], last.finished_at)
    size = GaugeMetricFamily("minipaas_last_backup_size_bytes", "Size of the last backup")
    size.add_metric([], float(last.size_bytes))
    yield from (finished, size)


class AppTrafficCollector(Collector):
    """Per-app traffic as nginx counted it, read from the router at scrape time; labelled by
    app name (bounded by the apps that exist) and status class (five values)."""

    def collect(self) -> Iterator[Metric]:
        from sqlalchemy import select

        from minipaas.db.models import App
        from minipaas.db.session import get_session
        from minipaas.router import traffic
        from minipaas.services.routing import get_router

        try:
            totals = traffic.totals(get_router())
            with get_session() as db:
                rows = db.execute(select(App.id, App.name).where(App.id.in_(totals))).all()
        except Exception:  # router or database down: no sample rather than a failed scrape
            return
        names: dict[int, str] = dict(rows)
        yield from _traffic_families(
            [(names[app_id], found) for app_id, found in totals.items() if app_id in names]
        )


def _traffic_families(apps: list[tuple[str, AppTotals]]) -> Iterator[Metric]:
    from minipaas.router.traffic import METHODS, PROMETHEUS_BUCKETS_MS, STATUS_CLASSES

    requests = CounterMetricFamily(
        "minipaas_app_requests", "App requests through the router", labels=["app", "status_class"]
    )
    methods = CounterMetricFamily(
        "minipaas_app_requests_by_method", "App requests by method", labels=["app", "method"]
    )
    sent = CounterMetricFamily(
        "minipaas_app_response_bytes", "Bytes the router sent for the app", labels=["app"]
    )
    in_flight = GaugeMetricFamily(
        "minipaas_app_requests_in_flight", "App requests being proxied now", labels=["app"]
    )
    latency = HistogramMetricFamily(
        "minipaas_app_request_duration_seconds",
        "App request time at the router (1 ms resolution)",
        labels=["app"],
    )
    for name, found in apps:
        for status_class in STATUS_CLASSES:
            requests.add_metric([name, status_class], found.by_status_class[status_class])
        for method in METHODS:
            methods.add_metric([name, method], found.by_method[method])
        sent.add_metric([name], found.bytes_sent)
        in_flight.add_metric([name], found.in_flight)
        running, buckets = 0, []
        for bound, count in zip((*PROMETHEUS_BUCKETS_MS, None), found.buckets, strict=True):
            running += count
            buckets.append(("+Inf" if bound is None else str(bound / 1000), running))
        latency.add_metric([name], buckets, found.latency_ms_sum / 1000)
    yield from (requests, methods, sent, in_flight, latency)


def exposition() -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    state = CollectorRegistry()
    state.register(PlatformStateCollector())
    state.register(AppTrafficCollector())
    return generate_latest(registry) + generate_latest(state)
