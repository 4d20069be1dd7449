"""The router's traffic counters as Python reads them: buckets, percentiles, rollups."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from minipaas.router import traffic
from minipaas.router.dynamic_render import RouterConfig, render_router_config


class _Source:
    def __init__(self, totals: Any, minutes: Any) -> None:
        self._totals, self._minutes = totals, minutes

    def traffic_totals(self) -> Any:
        return self._totals

    def traffic_minutes(self, app_id: int) -> Any:
        return self._minutes


def test_buckets_ascend_and_prometheus_bounds_are_fine_bounds_too() -> None:
    fine = traffic.FINE_BUCKETS_MS
    assert list(fine) == sorted(set(fine))
    assert set(traffic.PROMETHEUS_BUCKETS_MS) <= set(fine)
    # every step above 10 ms is at most 12.5% wide: what the docs promise for percentiles
    assert all(b / a <= 1.125 for a, b in itertools.pairwise(fine) if a >= 10)


def test_percentile_interpolates_inside_the_bucket_and_handles_edges() -> None:
    counts = [0] * (len(traffic.FINE_BUCKETS_MS) + 1)
    counts[1] = 100  # all in (1 ms, 2 ms]
    assert traffic.percentile(counts, 0.5) == pytest.approx(1.5)
    assert traffic.percentile([0] * len(counts), 0.5) is None
    counts[-1] = 1000  # +Inf: reported as the last bound
    assert traffic.percentile(counts, 0.99) == traffic.FINE_BUCKETS_MS[-1]


def test_last_hour_fills_every_minute_and_sums_the_window() -> None:
    now = 29_000_000
    minutes = {
        "enabled": True,
        "minute": now,
        "in_flight": 2,
        "minutes": [
            {"minute": now - 3, "status": {"2": 8, "5": 2}, "bytes": 500, "buckets": {"3": 10}},
            {"minute": now, "status": {"2": 10}, "bytes": 100, "buckets": {"5": 10}},
            {"minute": now - 999, "status": {"2": 1}},  # outside the window: ignored
        ],
    }
    found = traffic.last_hour(_Source({}, minutes), 7)
    assert len(found.minutes) == traffic.WINDOW_MINUTES + 1
    assert found.minutes[-1].start == datetime.fromtimestamp(now * 60, UTC)
    busy = found.minutes[-4]
    assert (busy.requests, busy.rate_5xx) == (10, 0.2)
    assert busy.p50_ms == pytest.approx(2.5)
    total = found.summary()
    assert total is not None
    assert (total.requests, total.bytes_sent, total.by_status_class["5xx"]) == (20, 600, 2)
    assert total.p50_ms == pytest.approx(3.0) and found.in_flight == 2


def test_totals_read_lua_json_including_its_empty_tables() -> None:
    answer = {
        "enabled": True,
        "apps": {
            "3": {"status": {"4": 2}, "methods": {}, "bytes": 10, "buckets": {"13": 2}},
        },
    }
    found = traffic.totals(_Source(answer, {}))[3]
    assert found.requests == 2 and found.by_method["GET"] == 0
    assert found.buckets[-1] == 2  # index 13 of 12 bounds: +Inf
    assert traffic.totals(_Source({"enabled": False}, {})) == {}
    assert traffic.last_hour(_Source({}, {"enabled": False}), 3).summary() is None


def test_metrics_off_declares_no_dict_and_disables_counting(tmp_path: Any) -> None:
    def config(metrics: bool) -> str:
        return render_router_config(
            RouterConfig(
                **_kwargs(tmp_path),
                metrics=metrics,
                metrics_mb=3,
            )
        ).text

    assert "lua_shared_dict minipaas_traffic 3m;" in config(True)
    assert "enabled = true" in config(True)
    assert "minipaas_traffic" not in config(False).split("init_by_lua_block")[0]
    assert "enabled = false" in config(False)
    with pytest.raises(ValueError, match="metrics_mb"):
        RouterConfig(**{**_kwargs(tmp_path), "metrics_mb": 0})


def _kwargs(tmp_path: Any) -> dict[str, Any]:
    return {
        "nginx_dir": tmp_path,
        "log_dir": tmp_path,
        "run_dir": tmp_path,
        "control_socket": tmp_path / "c.sock",
        "secret_file": tmp_path / "s",
        "snapshot_file": tmp_path / "snap",
        "journal_file": tmp_path / "journal",
        "listen": "127.0.0.1:8080",
        "api_address": "127.0.0.1:8081",
        "platform_host": "minipaas.localhost",
        "run_as_root": False,
    }
