"""Deploys that fail end as a clear failure, leave nothing behind, keep the good one serving."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from minipaas.queue import job_status
from tests.support.flows import create_app, deploy, platform_containers, wait_for_deployment
from tests.support.images import BINARY_LOGGER, CRASHER, HELLO_V1, MISSING, SLOW_STARTER
from tests.support.stack import Stack
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]


def test_missing_image_fails_clearly_and_leaves_nothing(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, MISSING)["id"]
    result = deploy(api, app_id)
    assert result["status"] == "failed"
    assert MISSING in result["error"] and "not present on this host" in result["error"]
    assert api.get(f"/apps/{app_id}").json()["status"] == "failed"
    assert platform_containers(stack.settings.instance_name, app_id) == []


def test_missing_image_with_pull_policy_never(api: httpx.Client, app_name: str) -> None:
    # Said at create and at change, not first at the deploy
    refused = api.post(
        "/apps",
        json={"name": app_name, "image": MISSING, "internal_port": 80, "pull_policy": "never"},
    )
    assert refused.status_code == 422, refused.text
    assert "not on this host" in refused.text and "pull_policy is 'never'" in refused.text
    created = create_app(api, app_name, MISSING)
    assert created["notice"] == (
        f"image '{MISSING}' is not on this host yet: it will be pulled at the first deploy"
    )
    app_id = created["id"]
    changed = api.patch(f"/apps/{app_id}", json={"pull_policy": "never"})
    assert changed.status_code == 422, changed.text
    present = api.patch(f"/apps/{app_id}", json={"image": HELLO_V1, "pull_policy": "never"})
    assert present.status_code == 200 and present.json()["notice"] is None, present.text
    # back to the missing image: refused under 'never', a notice otherwise
    assert api.patch(f"/apps/{app_id}", json={"image": MISSING}).status_code == 422
    assert api.patch(
        f"/apps/{app_id}", json={"image": MISSING, "pull_policy": "if-not-present"}
    ).json()["notice"]
    result = deploy(api, app_id)
    assert result["status"] == "failed"
    assert "not present on this host" in result["error"] or "pull" in result["error"]


def test_container_that_exits_at_once_fails_with_code_and_logs(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, CRASHER)["id"]
    result = deploy(api, app_id)
    assert result["status"] == "failed"
    assert "code 3" in result["error"]
    assert "crashing on purpose" in result["error"]
    assert platform_containers(stack.settings.instance_name, app_id) == []
    assert router.get(f"/apps/{app_id}/").status_code == 404


def test_bad_deploy_keeps_the_good_one_serving(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    good = deploy(api, app_id)
    assert good["status"] == "succeeded"
    api.patch(f"/apps/{app_id}", json={"image": CRASHER})
    bad = deploy(api, app_id)
    assert bad["status"] == "failed"
    app = api.get(f"/apps/{app_id}").json()
    assert app["status"] == "running"
    assert app["current_deployment_id"] == good["id"]
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"
    assert platform_containers(stack.settings.instance_name, app_id) == [good["container_id"]]


def test_second_deploy_while_one_is_active_gets_409(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]

    def request_deploy(_: int) -> httpx.Response:
        return api.post(f"/apps/{app_id}/deploy")

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(request_deploy, range(6)))
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 409]
    assert len(accepted) == 1, [r.text for r in responses]
    assert len(refused) == 5
    active_id = accepted[0].json()["id"]
    assert all(f"deployment {active_id}" in r.json()["detail"] for r in refused)
    assert wait_for_deployment(api, app_id, active_id)["status"] == "succeeded"
    history = api.get(f"/apps/{app_id}/deployments").json()
    assert [d["id"] for d in history] == [active_id]


def test_lifecycle_actions_that_do_not_fit_the_state_get_409(
    api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    for action in ("stop", "start", "restart", "remove"):
        response = api.post(f"/apps/{app_id}/{action}")
        assert response.status_code == 409, (action, response.text)
        assert "deploy it first" in response.json()["detail"]
    assert deploy(api, app_id)["status"] == "succeeded"
    response = api.post(f"/apps/{app_id}/start")
    assert response.status_code == 409
    assert "already running" in response.json()["detail"]


def test_logs_with_bytes_that_are_not_utf8(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, BINARY_LOGGER)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    response = api.get(f"/apps/{app_id}/logs")
    assert response.status_code == 200
    assert "before" in response.json()["logs"] and "after" in response.json()["logs"]


def test_logs_of_an_app_never_deployed_are_empty(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert api.get(f"/apps/{app_id}/logs").json() == {"logs": ""}


def test_cancel_a_running_and_a_queued_deployment(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    slow = create_app(api, app_name, SLOW_STARTER)["id"]
    waiting = create_app(api, f"{app_name}-q", HELLO_V1)["id"]
    running_id = api.post(f"/apps/{slow}/deploy").json()["id"]
    # one worker: this one waits in the queue behind the slow deploy
    queued_id = api.post(f"/apps/{waiting}/deploy").json()["id"]

    cancelled = api.post(f"/apps/{waiting}/deployments/{queued_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "failed"
    assert cancelled.json()["error"] == "cancelled before it started"
    assert api.get(f"/apps/{waiting}").json()["status"] == "created"

    eventually(
        lambda: api.get(f"/apps/{slow}/deployments/{running_id}").json()["status"] == "running",
        timeout=20,
        interval=0.05,
        message=f"deployment {running_id} did not start running",
    )
    assert api.post(f"/apps/{slow}/deployments/{running_id}/cancel").status_code == 202
    ended = wait_for_deployment(api, slow, running_id)
    assert ended["status"] == "failed" and ended["error"] == "cancelled while it was running"
    assert ended["finished_at"] is not None
    assert platform_containers(stack.settings.instance_name, slow) == []
    again = api.post(f"/apps/{slow}/deployments/{running_id}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]
    # the queued job, when the worker reaches it, changes nothing: wait until the worker has
    # run it (its RQ job is `deploy-<id>`), then look
    eventually(
        lambda: job_status(f"deploy-{queued_id}") == "finished",
        timeout=30,
        interval=0.1,
        message=f"the worker did not process the job of cancelled deployment {queued_id}",
    )
    skipped = api.get(f"/apps/{waiting}/deployments/{queued_id}").json()
    assert skipped["status"] == "failed"
    assert skipped["error"] == "cancelled before it started"
    events = api.get(f"/apps/{waiting}/deployments/{queued_id}/events").json()
    assert "started" not in [event["kind"] for event in events], events
    assert api.get(f"/apps/{waiting}").json()["status"] == "created"
    assert platform_containers(stack.settings.instance_name, waiting) == []


def test_health_check_path_and_running_seconds(api: httpx.Client, app_name: str) -> None:
    # any answer below 500 is healthy, a 404 included
    app_id = create_app(api, app_name, HELLO_V1, health_check_path="/no-such-page")["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    # an app without an HTTP health page: healthy once it has run 2 s
    quiet = create_app(
        api,
        f"{app_name}-quiet",
        HELLO_V1,
        command=["/bin/sh", "-c", "sleep 3600"],
        health_check_running_seconds=2,
    )["id"]
    result = deploy(api, quiet)
    assert result["status"] == "succeeded", result["error"]
    assert result["duration_seconds"] >= 2
    bad = api.post(
        "/apps",
        json={
            "name": f"{app_name}-bad",
            "image": HELLO_V1,
            "internal_port": 80,
            "health_check_path": "no-slash here",
        },
    )
    assert bad.status_code == 422 and "health_check_path" in bad.text


def test_deployment_progress_events_as_a_list_and_as_a_stream(
    api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, SLOW_STARTER)["id"]
    deployment_id = api.post(f"/apps/{app_id}/deploy").json()["id"]
    kinds: list[str] = []
    with api.stream(
        "GET",
        f"/apps/{app_id}/deployments/{deployment_id}/events",
        params={"follow": "true"},
        timeout=60,
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
    # the stream ended by itself with the outcome
    assert kinds[0] == "queued" and kinds[-1] == "succeeded"
    for kind in ("started", "image", "container", "health", "healthy", "route"):
        assert kind in kinds, kinds
    # the image's line is written while the container starts, and still comes before it
    assert kinds.index("image") < kinds.index("container") < kinds.index("healthy")
    assert kinds.index("healthy") < kinds.index("route")
    listed = api.get(f"/apps/{app_id}/deployments/{deployment_id}/events").json()
    assert [event["kind"] for event in listed] == kinds
    later = api.get(
        f"/apps/{app_id}/deployments/{deployment_id}/events", params={"after": listed[-2]["id"]}
    ).json()
    assert [event["kind"] for event in later] == ["succeeded"]
    assert "waiting for health" in next(e["message"] for e in listed if e["kind"] == "health")
