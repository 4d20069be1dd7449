"""Several workers: deploys of different apps overlap, one app's jobs never do, and a
lifecycle action is taken before deploys waiting in the queue."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

import httpx
import pytest
from rq.job import Job

from minipaas import queue
from minipaas.db.models import AppAction
from minipaas.db.session import get_session
from minipaas.queue import get_redis
from minipaas.services.state import Action
from minipaas.worker import jobs
from tests.support.flows import create_app, deploy, wait_for_deployment
from tests.support.images import HELLO_V1, SLOW_STARTER
from tests.support.stack import Stack
from tests.support.waiting import eventually

# alone: it times how workers overlap and take turns, which a second session's load shifts
pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.alone]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_deploys_of_different_apps_run_at_once(
    second_worker: None, api: httpx.Client, app_name: str
) -> None:
    first = create_app(api, f"{app_name}-a", SLOW_STARTER)["id"]
    second = create_app(api, f"{app_name}-b", SLOW_STARTER)["id"]
    one = api.post(f"/apps/{first}/deploy").json()["id"]
    two = api.post(f"/apps/{second}/deploy").json()["id"]
    a = wait_for_deployment(api, first, one)
    b = wait_for_deployment(api, second, two)
    assert a["status"] == b["status"] == "succeeded"
    # each waits ~4 s for its app: run one after the other they could not overlap
    assert _at(b["started_at"]) < _at(a["finished_at"])
    assert _at(a["started_at"]) < _at(b["finished_at"])


def test_jobs_of_one_app_never_overlap(
    second_worker: None, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, SLOW_STARTER)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    deployment_id = api.post(f"/apps/{app_id}/deploy").json()["id"]
    # straight to the queue, past the API's "a deployment is in progress" check
    with get_session() as db:
        row = AppAction(app_id=app_id, action=Action.RESTART)
        db.add(row)
        db.commit()
        action_id = row.id
    restart = Job.fetch(jobs.enqueue_action(action_id, timeout=120), connection=get_redis())
    deployment = wait_for_deployment(api, app_id, deployment_id)
    assert deployment["status"] == "succeeded"
    eventually(
        lambda: restart.get_status(refresh=True) == "finished",
        timeout=60,
        interval=0.2,
        message="the restart job did not finish",
    )
    restart.refresh()
    assert restart.ended_at is not None
    ended = restart.ended_at
    if ended.tzinfo is None:  # RQ's times are UTC
        ended = ended.replace(tzinfo=UTC)
    # the other worker took it at once, but it did its work (under the app's lock) either
    # before the deploy began or after it ended, never while it ran
    began, finished = _at(deployment["started_at"]), _at(deployment["finished_at"])
    assert ended <= began or ended >= finished, (ended, began, finished)
    assert api.get(f"/apps/{app_id}").json()["status"] == "running"


def test_a_stop_is_taken_before_deploys_waiting_in_the_queue(
    second_worker: None, api: httpx.Client, app_name: str
) -> None:
    running = create_app(api, f"{app_name}-r", HELLO_V1)["id"]
    assert deploy(api, running)["status"] == "succeeded"
    slow = [create_app(api, f"{app_name}-{n}", SLOW_STARTER)["id"] for n in range(4)]
    queued = [(app, api.post(f"/apps/{app}/deploy").json()["id"]) for app in slow]
    # two workers busy with two slow deploys, two wait; a stop jumps the queue: the first
    # worker free takes it, so it is done before the last deploy starts
    stopped = api.post(f"/apps/{running}/stop")
    assert stopped.status_code == 200, stopped.text
    last_app, last_id = queued[-1]
    assert wait_for_deployment(api, last_app, last_id)["status"] == "succeeded"
    events = api.get(f"/apps/{last_app}/deployments/{last_id}/events").json()
    started = _at(next(e["at"] for e in events if e["kind"] == "started"))
    stop_done = _at(api.get(f"/apps/{running}").json()["updated_at"])
    assert stop_done < started


def test_a_worker_killed_mid_deploy_does_not_stop_the_others(
    stack: Stack, second_worker: None, api: httpx.Client, app_name: str
) -> None:
    """SIGKILL the worker running one deploy: the other worker's deploy goes on, the killed
    one's deployment is ended by the survivors' reconciler, and the app deploys again."""
    doomed = create_app(api, f"{app_name}-k", SLOW_STARTER)["id"]
    other = create_app(api, f"{app_name}-o", SLOW_STARTER)["id"]
    doomed_deploy = api.post(f"/apps/{doomed}/deploy").json()["id"]
    other_deploy = api.post(f"/apps/{other}/deploy").json()["id"]

    def worker_pid_of(deployment_id: int) -> int | None:
        run = queue.job_run(jobs.deploy_job_id(deployment_id))
        if run is None or run.status != "started" or run.worker_name is None:
            return None
        record = queue.worker_record(run.worker_name)
        return record.pid if record is not None else None

    pid = eventually(
        lambda: worker_pid_of(doomed_deploy),
        timeout=20,
        interval=0.05,
        message="no worker took the deploy",
    )
    os.kill(pid, signal.SIGKILL)

    assert wait_for_deployment(api, other, other_deploy)["status"] == "succeeded"
    ended = wait_for_deployment(api, doomed, doomed_deploy, timeout=60)
    assert ended["status"] == "failed" and "worker" in ended["error"], ended
    assert deploy(api, doomed)["status"] == "succeeded"
