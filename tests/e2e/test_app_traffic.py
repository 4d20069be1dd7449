"""Per-app traffic metrics on the whole platform: busybox apps, real router, API and CLI-free."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from minipaas.router.traffic import FLUSH_SECONDS
from tests.e2e.test_cli import _cli
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import new_member

pytestmark = [pytest.mark.docker]


def _timed(router: httpx.Client, path: str, status: int, **headers: str) -> float:
    started = time.perf_counter()
    response = router.get(path, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == status, (path, response.status_code)
    return elapsed


def _sample(text: str, app: str, status_class: str) -> float:
    series = f'minipaas_app_requests_total{{app="{app}",status_class="{status_class}"}}'
    match = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{series} not in /metrics"
    return float(match.group(1))


@pytest.mark.alone  # the router's p95 within 1 ms of the client's
def test_router_counts_each_apps_requests_exactly_and_keeps_counting_across_a_redeploy(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    owner, stranger = new_member(api), new_member(api)
    with httpx.Client(base_url=stack.api_url, headers=owner.headers, timeout=60) as mine:
        first = create_app(mine, app_name, HELLO_V1)
    second = create_app(api, f"{app_name}-b", HELLO_V1)
    one, two = first["id"], second["id"]
    assert deploy(api, one)["status"] == "succeeded"
    assert deploy(api, two)["status"] == "succeeded"
    host = f"{app_name}.{stack.settings.apps_domain}"

    measured = [_timed(router, "/", 200, Host=host) for _ in range(40)]
    measured += [_timed(router, "/missing", 404, Host=host) for _ in range(6)]
    for _ in range(15):
        _timed(router, f"/apps/{two}/", 200)
    for _ in range(4):
        _timed(router, f"/apps/{two}/missing", 404)
    # a redeploy moves the app to a new container and port: its counts go on
    assert deploy(api, one)["status"] == "succeeded"
    measured += [_timed(router, "/", 200, Host=host) for _ in range(5)]
    assert api.post(f"/apps/{two}/stop").status_code == 200
    for _ in range(7):
        _timed(router, f"/apps/{two}/", 503)
    time.sleep(FLUSH_SECONDS * 4)  # nginx workers add their counts to the shared dict

    with httpx.Client(base_url=stack.api_url, timeout=60) as anyone:
        assert anyone.get(f"/apps/{one}/metrics", headers=stranger.headers).status_code == 404
        mine_seen = anyone.get(f"/apps/{one}/metrics", headers=owner.headers)
    assert mine_seen.status_code == 200, mine_seen.text
    first_total = mine_seen.json()["total"]
    assert first_total["requests"] == 51
    assert first_total["status_classes"] == {"1xx": 0, "2xx": 45, "3xx": 0, "4xx": 6, "5xx": 0}
    second_seen = api.get(f"/apps/{two}/metrics").json()
    assert second_seen["total"]["status_classes"]["2xx"] == 15
    assert second_seen["total"]["status_classes"]["4xx"] == 4
    assert second_seen["total"]["status_classes"]["5xx"] == 7
    assert second_seen["total"]["rate_5xx"] == pytest.approx(7 / 26, abs=1e-4)
    assert len(second_seen["minutes"]) >= 60

    # p95: nginx's request time (1 ms resolution) is part of what the client measured, which
    # adds the client's own time; with busybox at ~3 ms that part is not small, so here the
    # router may not exceed the client by more than its resolution. The 10% check with known
    # app delays is tests/integration/test_router_traffic.py's.
    client_p95 = sorted(measured)[int(0.95 * len(measured)) - 1]
    assert 0 < first_total["p95_ms"] <= client_p95 + 1, (first_total, client_p95)
    assert first_total["p50_ms"] <= first_total["p95_ms"] <= first_total["p99_ms"]

    text = api.get("/metrics").text
    assert _sample(text, app_name, "2xx") == 45 and _sample(text, app_name, "4xx") == 6
    assert _sample(text, f"{app_name}-b", "5xx") == 7
    assert (
        f'minipaas_app_request_duration_seconds_bucket{{app="{app_name}",le="+Inf"}} 51.0' in text
    )


def test_cli_stats_prints_the_minutes_with_traffic_and_the_hour(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str, tmp_path: Path
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    for path in ["/"] * 8 + ["/missing"] * 2:
        router.get(f"/apps/{app_id}{path}")
    time.sleep(FLUSH_SECONDS * 4)

    shown = _cli(stack, tmp_path, "stats", app_name, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["total"]["requests"] == 10
    table = _cli(stack, tmp_path, "stats", app_name)  # piped: tab-separated, full values
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["start", "requests", "4xx", "5xx"]
    assert lines[-1].split("\t")[:4] == ["last hour", "10", "2", "0"]
