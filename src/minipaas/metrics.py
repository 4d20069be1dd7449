"""Prometheus metrics of the platform itself.

The API (several uvicorn processes) and the worker write to one multiprocess directory,
DATA_DIR/run/metrics; the `api` and `worker` commands point PROMETHEUS_MULTIPROC_DIR at it
before anything imports prometheus_client.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

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
        depth = GaugeMetricFamily("minipaas_queue_depth", "Jobs waiting in the queue")
        try:
            depth.add_metric([], float(get_queue().count))
        except Exception:  # Redis down: no sample rather than a failed scrape
            return
        yield depth


def exposition() -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    state = CollectorRegistry()
    state.register(PlatformStateCollector())
    return generate_latest(registry) + generate_latest(state)
