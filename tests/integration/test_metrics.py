"""GET /metrics: Prometheus text from the real API and worker processes."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.flows import create_app, deploy
from tests.support.images import CRASHER, HELLO_V1
from tests.support.stack import Stack
from tests.support.users import new_member

pytestmark = [pytest.mark.docker]


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{series} not in /metrics"
    return float(match.group(1))


@pytest.mark.alone  # counts what the worker did meanwhile
def test_metrics_cover_requests_deployments_router_apps_and_queue(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    before = api.get("/metrics").text
    good = create_app(api, app_name, HELLO_V1)["id"]
    bad = create_app(api, f"{app_name}-bad", CRASHER)["id"]
    assert deploy(api, good)["status"] == "succeeded"
    assert deploy(api, bad)["status"] == "failed"

    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text

    def grew(series: str, by: float = 1) -> bool:
        earlier = _value(before, series) if series in before else 0.0
        return _value(text, series) >= earlier + by

    assert grew('minipaas_deployments_total{outcome="succeeded"}')
    assert grew('minipaas_deployments_total{outcome="failed"}')
    assert grew('minipaas_deployment_duration_seconds_count{outcome="succeeded"}')
    # routes change in nginx's memory: no reload for a deploy
    assert grew('minipaas_router_route_updates_total{outcome="ok"}', 2)
    assert grew(
        'minipaas_http_requests_total{method="POST",route="/apps/{app_id}/deploy",status="202"}',
        2,
    )
    assert 'minipaas_http_request_duration_seconds_bucket{le="0.005",method="GET"' in text
    assert _value(text, 'minipaas_apps{status="running"}') >= 1
    assert _value(text, 'minipaas_apps{status="failed"}') >= 1
    assert _value(text, "minipaas_queue_depth") >= 0
    assert _value(text, 'minipaas_reconciler_actions_total{step="republish_routes"}') >= 0


def test_metrics_are_for_admins(stack: Stack, api: httpx.Client) -> None:
    member = new_member(api)
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=member.headers).status_code == 403
