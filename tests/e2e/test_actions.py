"""Lifecycle actions are rows: answered at once (202) and followed, or done within the wait
(200); one pending per app; a job Redis lost is queued again by the reconciler."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from minipaas import queue
from minipaas.clock import now
from minipaas.db.models import ActionStatus, AppAction
from minipaas.db.session import get_session
from minipaas.host.platform import processes
from minipaas.services import app_actions
from minipaas.worker import jobs
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1, SLOW_STARTER
from tests.support.stack import Stack
from tests.support.users import new_member
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def _follow(api: httpx.Client, app_id: int, action_id: int, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        response = api.get(f"/apps/{app_id}/actions/{action_id}")
        assert response.status_code == 200, response.text
        body = dict(response.json())
        return body if body["status"] in ("succeeded", "failed") else None

    return eventually(ended, timeout=timeout, interval=0.1, message="the action did not end")


def test_an_action_answers_at_once_and_is_followed(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, SLOW_STARTER)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    stopped = api.post(f"/apps/{app_id}/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["done"] is True and stopped.json()["app"]["status"] == "stopped"

    # The slow starter takes seconds to be healthy: with wait=0 the answer does not wait
    started = api.post(f"/apps/{app_id}/start", params={"wait": 0})
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["done"] is False and body["status"] in ("queued", "running")
    assert started.headers["location"] == f"/apps/{app_id}/actions/{body['id']}"
    # one pending action per app: a second one is refused and names the first
    again = api.post(f"/apps/{app_id}/restart", params={"wait": 0})
    assert again.status_code == 409, again.text
    assert f"action {body['id']}" in again.json()["detail"]

    ended = _follow(api, app_id, body["id"])
    assert ended["status"] == "succeeded" and ended["started_at"] and ended["finished_at"]
    assert api.get(f"/apps/{app_id}").json()["status"] == "running"
    history = api.get(f"/apps/{app_id}/actions")
    assert history.headers["x-total-count"] == "2"
    assert [row["action"] for row in history.json()] == ["start", "stop"]


def test_a_failed_action_says_why(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    assert api.post(f"/apps/{app_id}/stop").status_code == 200
    # the container goes away behind the platform's back: the start cannot succeed
    import docker

    container = api.get(f"/apps/{app_id}").json()["container_name"]
    docker.from_env().containers.get(container).remove(force=True)
    started = api.post(f"/apps/{app_id}/start", params={"wait": 0})
    if started.status_code == 409:
        # Ended before the first look (the worker was quick), or the reconciler saw the
        # container gone first and the start was refused: either way the answer says why
        assert "deploy" in started.json()["detail"], started.text
        return
    assert started.status_code == 202, started.text
    ended = _follow(api, app_id, started.json()["id"])
    assert ended["status"] == "failed" and ended["failure"] == "conflict"
    assert "deploy the app again" in ended["detail"]


def test_another_users_actions_are_not_found(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    member = new_member(api)
    member_api = httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=30)
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    action_id = api.post(f"/apps/{app_id}/stop").json()["id"]
    assert member_api.get(f"/apps/{app_id}/actions").status_code == 404
    assert member_api.get(f"/apps/{app_id}/actions/{action_id}").status_code == 404
    assert api.get(f"/apps/{app_id}/actions/999999").status_code == 404


@pytest.fixture
def worker_stopped(stack: Stack) -> Iterator[None]:
    worker = next(p for p in processes(stack.settings) if p.name == "worker")
    worker.stop()
    try:
        yield
    finally:
        worker.start(stack.env)


def _deployed_by_a_worker_started_for_it(stack: Stack, api: httpx.Client, app_name: str) -> int:
    """An app deployed while the workers are stopped: one starts for the deploy, then stops."""
    app_id = int(create_app(api, app_name, HELLO_V1)["id"])
    worker = next(p for p in processes(stack.settings) if p.name == "worker")
    worker.start(stack.env)
    assert deploy(api, app_id)["status"] == "succeeded"
    worker.stop()
    return app_id


def test_an_action_whose_job_redis_lost_still_runs(
    stack: Stack, api: httpx.Client, app_name: str, worker_stopped: None
) -> None:
    """The row is the truth: with its job gone from Redis, the reconciler queues it again."""
    app_id = _deployed_by_a_worker_started_for_it(stack, api, app_name)
    worker = next(p for p in processes(stack.settings) if p.name == "worker")

    stopped = api.post(f"/apps/{app_id}/stop", params={"wait": 0})
    assert stopped.status_code == 202, stopped.text
    action_id = stopped.json()["id"]
    # Redis forgets the job (a restart without its data)
    queue.delete_job(jobs.action_job_id(action_id))
    queue.get_action_queue().empty()
    worker.start(stack.env)
    ended = _follow(api, app_id, action_id, timeout=90)
    assert ended["status"] == "succeeded", ended
    assert api.get(f"/apps/{app_id}").json()["status"] == "stopped"
    worker.stop()  # the fixture starts it again


def test_an_action_waiting_in_its_queue_is_not_taken_for_lost(
    stack: Stack, api: httpx.Client, app_name: str, worker_stopped: None
) -> None:
    """Every worker busy: the action waits in the actions queue. The reconciler leaves it
    there; it took it for lost (it looked in the deploy and build queues only), deleted it and
    queued it again at the back, on every pass."""
    app_id = _deployed_by_a_worker_started_for_it(stack, api, app_name)
    worker = next(p for p in processes(stack.settings) if p.name == "worker")

    stopped = api.post(f"/apps/{app_id}/stop", params={"wait": 0})
    assert stopped.status_code == 202, stopped.text
    action_id = stopped.json()["id"]
    job_id = jobs.action_job_id(action_id)
    with get_session() as db:  # older than the reconciler's grace for lost jobs
        db.execute(
            update(AppAction)
            .where(AppAction.id == action_id)
            .values(created_at=now() - timedelta(minutes=5))
        )
        db.commit()

    assert app_actions.requeue_lost_actions() == []
    assert queue.get_action_queue().get_job_ids() == [job_id]
    worker.start(stack.env)
    assert _follow(api, app_id, action_id)["status"] == "succeeded"
    worker.stop()  # the fixture starts it again


def test_an_action_its_job_just_ended_is_not_ended_again_as_lost(
    stack: Stack,
    api: httpx.Client,
    app_name: str,
    worker_stopped: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reconciler reads the pending actions, then asks Redis about each job. A job that
    ended in between (it succeeded, let go of the app's lock, and RQ no longer counts it as
    running) was ended a second time as "worker stopped": a stop that worked read failed."""
    app_id = _deployed_by_a_worker_started_for_it(stack, api, app_name)
    stopped = api.post(f"/apps/{app_id}/stop", params={"wait": 0})
    assert stopped.status_code == 202, stopped.text
    action_id = stopped.json()["id"]
    with get_session() as db:  # running on a worker, older than the grace for lost jobs
        db.execute(
            update(AppAction)
            .where(AppAction.id == action_id)
            .values(
                status=ActionStatus.RUNNING,
                started_at=now(),
                created_at=now() - timedelta(minutes=5),
            )
        )
        db.commit()

    def job_ends_meanwhile(job_id: str) -> bool:
        with get_session() as db:  # what the worker's job commits as it ends
            db.execute(
                update(AppAction)
                .where(AppAction.id == action_id)
                .values(status=ActionStatus.SUCCEEDED, finished_at=now())
            )
            db.commit()
        return False  # finished: in progress no more

    monkeypatch.setattr(app_actions.liveness, "job_in_progress", job_ends_meanwhile)
    assert app_actions.requeue_lost_actions() == []
    assert api.get(f"/apps/{app_id}/actions/{action_id}").json()["status"] == "succeeded"
