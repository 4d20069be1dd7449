"""The platform's own logs: JSON lines, a request id that follows the request into its job."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.flows import create_app, wait_for_deployment
from tests.support.images import HELLO_V1
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker]


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_deploy_request_and_its_job_share_the_request_id(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    response = api.post(f"/apps/{app_id}/deploy", headers={"X-Request-ID": f"req-{app_name}"})
    assert response.headers["x-request-id"] == f"req-{app_name}"
    deployment_id = response.json()["id"]
    assert wait_for_deployment(api, app_id, deployment_id)["status"] == "succeeded"
    # a header that is not a plain short id is replaced by one of ours
    other = api.get("/me", headers={"X-Request-ID": 'bad id {with} "quotes"'})
    assert len(other.headers["x-request-id"]) == 32

    # The API flushes its lines in batches (every 0.2 s): wait for them
    deadline = time.monotonic() + 10
    while True:
        api_lines = _json_lines((stack.settings.log_dir / "api.log").read_text())
        access = [line for line in api_lines if line.get("request_id") == f"req-{app_name}"]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert access and access[-1]["route"] == "/apps/{app_id}/deploy"
    assert access[-1]["status"] == 202 and access[-1]["user"] == "admin"
    assert isinstance(access[-1]["duration_ms"], float)

    worker_lines = _json_lines((stack.settings.log_dir / "worker.log").read_text())
    job_lines = [line for line in worker_lines if line.get("request_id") == f"req-{app_name}"]
    assert job_lines, "the worker's lines for the job carry the request id"
    assert all(line.get("deployment_id") == deployment_id for line in job_lines)
    assert any(
        f"deployment {deployment_id} succeeded" in str(line["message"]) for line in job_lines
    )
