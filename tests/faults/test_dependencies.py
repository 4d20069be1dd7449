"""Redis and PostgreSQL go away and come back: the worker lives on, deploys end with the
real reason, and no change happens without its audit event. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import pytest
from sqlalchemy import select, text

from minipaas.db.models import App
from minipaas.db.session import get_session
from minipaas.host.errors import HostServiceError
from minipaas.host.platform import SupervisedProcess, processes, service
from tests.support.flows import create_app, deploy, platform_containers, wait_for_deployment
from tests.support.images import HELLO_V1, HELLO_V2, SLOW_STARTER
from tests.support.stack import Stack
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# The old worker's message for a deployment it left behind: wrong while the worker lives
WORKER_STOPPED = "stopped (killed or crashed)"
# Redis stays down this long after the job ended: long enough for RQ's work loop to quit
BOOKKEEPING_FAILED_SECONDS = 14


def _worker_pid(stack: Stack) -> int:
    worker = next(p for p in processes(stack.settings) if p.name == "worker")
    pid = worker.pid()
    assert pid is not None, "the worker is not running"
    return pid


def _start_slow_deploy(api: httpx.Client, app_name: str) -> tuple[int, int]:
    """A deploy that is mid-way (its container started, not yet healthy) for ~4 s."""
    app_id = create_app(api, app_name, SLOW_STARTER)["id"]
    deployment_id = api.post(f"/apps/{app_id}/deploy").json()["id"]

    def container_started() -> bool:
        deployment = api.get(f"/apps/{app_id}/deployments/{deployment_id}").json()
        return deployment["status"] == "running" and bool(deployment["container_id"])

    eventually(
        container_started, timeout=20, interval=0.1, message="the deploy did not get mid-way"
    )
    return app_id, deployment_id


@contextmanager
def _held_down(program: SupervisedProcess, *, kill: bool) -> Iterator[None]:
    """The program is down (SIGKILLed or stopped) and kept down until the block ends, then
    started again: the supervisor alone would bring it back at once."""
    pid = program.pid()
    assert pid is not None, "it is not running"
    if kill:
        os.kill(pid, signal.SIGKILL)

    def held_stopped() -> bool:
        with suppress(HostServiceError):  # "not running" while the supervisor restarts it
            program.stop()
        return program.pid() is None

    try:
        eventually(held_stopped, timeout=20, interval=0.1, message="it was not held down")
        yield
    finally:
        program.start()


def test_worker_outlives_redis_killed_while_it_runs_a_job(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    worker_pid = _worker_pid(stack)
    app_id, deployment_id = _start_slow_deploy(api, app_name)

    with _held_down(service(stack.settings, "redis"), kill=True):
        # The job needs no Redis and ends; RQ's bookkeeping after it meets the dead Redis.
        # Each command gives up after redis-py's ~6 s of retries: by the third (RQ's loop
        # quits, then fails to deregister) an RQ worker left alone has exited
        ended = wait_for_deployment(
            api, app_id, deployment_id, timeout=20, interval=0.2, through_outages=True
        )
        assert ended["status"] == "succeeded", ended["error"]
        time.sleep(BOOKKEEPING_FAILED_SECONDS)
        assert _worker_pid(stack) == worker_pid

    # The same worker takes jobs again
    later = create_app(api, f"{app_name}-after", HELLO_V1)["id"]
    assert deploy(api, later)["status"] == "succeeded"
    assert _worker_pid(stack) == worker_pid


def test_deploy_ends_with_the_database_reason_when_postgres_restarts_mid_way(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    worker_pid = _worker_pid(stack)
    app_id, deployment_id = _start_slow_deploy(api, app_name)

    with _held_down(service(stack.settings, "postgres"), kill=False):
        time.sleep(2)  # the deploy checks the database several times a second meanwhile

    # counted from the database's return
    ended = wait_for_deployment(
        api, app_id, deployment_id, timeout=10, interval=0.2, through_outages=True
    )
    if ended["status"] == "failed":
        assert "database" in ended["error"], ended["error"]
        assert WORKER_STOPPED not in ended["error"]
        assert platform_containers(stack.settings.instance_name, app_id) == []
    assert _worker_pid(stack) == worker_pid
    # The same worker deploys normally
    assert api.patch(f"/apps/{app_id}", json={"image": HELLO_V1}).status_code == 200
    assert deploy(api, app_id)["status"] == "succeeded"
    assert _worker_pid(stack) == worker_pid


@contextmanager
def _audit_log_read_only(role: str) -> Iterator[None]:
    """The platform's role owns its tables, so it can take its own INSERT right away: a real
    refusal by PostgreSQL, while authentication (other tables) keeps working."""
    with get_session() as db:
        db.execute(text(f'REVOKE INSERT ON audit_events FROM "{role}"'))
        db.commit()
    try:
        yield
    finally:
        with get_session() as db:
            db.execute(text(f'GRANT INSERT ON audit_events TO "{role}"'))
            db.commit()


def test_a_change_whose_audit_event_cannot_be_written_is_refused(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    # an earlier test may have just restarted PostgreSQL: start from a ready platform
    eventually(
        lambda: api.get("/health/ready").status_code == 200,
        timeout=20,
        interval=0.2,
        message="the platform was not ready",
    )
    existing = create_app(api, app_name, HELLO_V1)["id"]
    new_name = f"{app_name}-new"
    body = {"name": new_name, "image": HELLO_V1, "internal_port": 80}

    with _audit_log_read_only(stack.settings.postgres_user):
        refused = api.post("/apps", json=body)
        assert refused.status_code == 503, refused.text
        assert "audit" in refused.json()["detail"]
        changed = api.patch(f"/apps/{existing}", json={"image": HELLO_V2})
        assert changed.status_code == 503, changed.text
        assert api.get(f"/apps/{existing}").status_code == 200  # reads are not audited

    # Neither change happened
    with get_session() as db:
        assert db.scalar(select(App.id).where(App.name == new_name)) is None
        app = db.get(App, existing)
        assert app is not None and app.image == HELLO_V1
    # and with the audit log writable again, the same change is done and recorded
    assert api.post("/apps", json=body).status_code == 201
    latest = api.get("/audit", params={"limit": 1}).json()[0]
    assert (latest["action"], latest["target"], latest["outcome"]) == ("POST /apps", "/apps", "ok")
