"""Real faults, real signals: the platform repairs itself (the worker's reconciler)."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from sqlalchemy import func, select, update

from minipaas.clock import now
from minipaas.db.models import App, AppStatus, Build, BuildStatus, Deployment, DeploymentStatus
from minipaas.db.session import get_session
from minipaas.host.platform import processes, service
from minipaas.services import lifecycle
from minipaas.services.builds import pipeline as build_pipeline
from minipaas.services.deployments import records
from minipaas.services.deployments.recovery import end_abandoned_deployment_locked
from minipaas.services.routing import get_router
from minipaas.worker import jobs
from tests.support.flows import create_app, deploy, platform_containers, wait_for_deployment
from tests.support.images import CRASH_LOOPER, HELLO_V1, SLOW_STARTER
from tests.support.stack import Stack
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def _worker(stack: Stack):  # type: ignore[no-untyped-def]
    return next(p for p in processes(stack.settings) if p.name == "worker")


def test_worker_killed_mid_deploy_is_cleaned_up_when_it_comes_back(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, SLOW_STARTER)["id"]
    deployment_id = api.post(f"/apps/{app_id}/deploy").json()["id"]

    def container_started() -> bool:
        deployment = api.get(f"/apps/{app_id}/deployments/{deployment_id}").json()
        return deployment["status"] == "running" and bool(deployment["container_id"])

    eventually(
        container_started,
        timeout=20,
        interval=0.2,
        message="the deploy did not start its container",
    )
    worker = _worker(stack)
    pid = worker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # nobody starts it: the supervisor does
    eventually(
        lambda: worker.pid() not in (None, pid),
        timeout=10,
        interval=0.2,
        message="the supervisor did not start the worker again",
    )

    ended = wait_for_deployment(api, app_id, deployment_id, timeout=30)
    assert ended["status"] == "failed"
    assert "worker" in ended["error"] and "stopped" in ended["error"]
    app = api.get(f"/apps/{app_id}").json()
    assert app["status"] == "failed" and app["container_name"] is None
    assert platform_containers(stack.settings.instance_name, app_id) == []
    # and the new worker deploys normally
    assert api.patch(f"/apps/{app_id}", json={"image": HELLO_V1}).status_code == 200
    assert deploy(api, app_id)["status"] == "succeeded"


def test_container_removed_by_hand_is_not_shown_running(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    deployment = deploy(api, app_id)
    docker.from_env().containers.get(deployment["container_id"]).remove(force=True)

    eventually(
        lambda: api.get(f"/apps/{app_id}").json()["status"] == "failed",
        timeout=15,
        interval=0.2,
        message="the app was not marked failed",
    )
    app = api.get(f"/apps/{app_id}").json()
    assert "disappeared" in app["status_detail"]
    eventually(
        lambda: router.get(f"/apps/{app_id}/").status_code == 404,
        timeout=10,
        interval=0.2,
        message="the route was not removed",
    )


def test_a_stopped_app_whose_container_still_runs_has_it_stopped(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    """What a worker killed between recording a stop and sending it to the engine leaves:
    the app stopped in the database, its container running. A second stop is refused (the
    app is stopped), so only the reconciler can end it; a start then works as usual."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    container_id = deploy(api, app_id)["container_id"]
    engine = docker.from_env()
    with get_session() as db:
        app = db.get(App, app_id)
        assert app is not None
        app.status = AppStatus.STOPPED  # as the stop action commits it, before the engine call
        db.commit()

    eventually(
        lambda: engine.containers.get(container_id).status == "exited",
        timeout=20,
        interval=0.2,
        message="the container of the stopped app kept running",
    )
    assert api.get(f"/apps/{app_id}").json()["status"] == "stopped"
    started = api.post(f"/apps/{app_id}/start")
    assert started.status_code == 200, started.text
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}
    assert router.get("/", headers=host).text == "hello from v1\n"


def _as_if_never_ended(deployment_id: int) -> None:
    """What a worker killed after switching the route and before recording the end leaves:
    the deployment running (its switch, new container and route were committed)."""
    with get_session() as db:
        db.execute(
            update(Deployment)
            .where(Deployment.id == deployment_id)
            .values(status=DeploymentStatus.RUNNING, finished_at=None)
        )
        db.commit()


def test_a_second_job_of_a_switched_deployment_leaves_the_live_container_alone(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    """A deployment's job can run twice (queued again by a reconciler that took it for
    lost). If the first run switched the route and died, the second one started over and
    removed the container serving the app; it now ends the deployment as succeeded."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    deployment = deploy(api, app_id)
    _as_if_never_ended(deployment["id"])

    jobs.enqueue_deploy(deployment["id"])
    ended = wait_for_deployment(api, app_id, deployment["id"])
    assert ended["status"] == "succeeded", ended
    app = api.get(f"/apps/{app_id}").json()
    assert app["status"] == "running"
    assert docker.from_env().containers.get(deployment["container_id"]).status == "running"
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}
    assert router.get("/", headers=host).text == "hello from v1\n"


def test_a_switched_deployment_whose_container_crashed_since_still_succeeded(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    """Switched, then the worker died and the new container crashed; the previous one was
    already removed after the switch. Ending it as failed pointed the app back at that
    removed container and removed the crashed one: the app had nothing left to run. The
    deployment went live, so it succeeded, and the healer restarts the crash."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    deploy(api, app_id)
    second = deploy(api, app_id)
    assert second["status"] == "succeeded"
    worker = _worker(stack)
    worker.stop()  # its healer would restart the crash before the deployment is ended
    try:
        _as_if_never_ended(second["id"])
        docker.from_env().containers.get(second["container_id"]).kill()
        end_abandoned_deployment_locked(second["id"], "the worker stopped")
    finally:
        worker.start(stack.env)

    ended = api.get(f"/apps/{app_id}/deployments/{second['id']}").json()
    assert ended["status"] == "succeeded", ended
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}
    eventually(
        lambda: router.get("/", headers=host).status_code == 200,
        timeout=30,
        interval=0.2,
        message="the healer did not bring the crashed container back",
    )
    assert api.get(f"/apps/{app_id}").json()["container_name"] == second["container_name"]


def test_crash_looping_app_shows_crashed_and_backs_off(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, CRASH_LOOPER)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"

    # no longer stopped: restarted again and again, with a growing pause (test_self_healing)
    app = eventually(
        lambda: (a := api.get(f"/apps/{app_id}").json())["status"] == "crashed" and a,
        timeout=15,
        interval=0.2,
        message="the crash loop was not noticed",
    )
    detail = app["status_detail"]
    assert "crashed" in detail and "code 5" in detail and "giving up" in detail
    assert app["next_restart_at"] is not None and app["last_exit_code"] == 5


def test_killed_nginx_comes_back_with_all_routes(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    master = get_router().pid()
    assert master is not None
    children = [
        int(stat.parent.name)
        for stat in Path("/proc").glob("[0-9]*/stat")
        if _parent(stat) == master
    ]
    for pid in [master, *children]:
        os.kill(pid, signal.SIGKILL)

    def serving() -> bool:
        try:
            return router.get(f"/apps/{app_id}/").text == "hello from v1\n"
        except httpx.HTTPError:
            return False

    eventually(
        serving, timeout=20, interval=0.2, message="nginx did not come back with the app's route"
    )


def _parent(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_postgres_restart_readiness_503_then_recovers(stack: Stack, api: httpx.Client) -> None:
    postgres = service(stack.settings, "postgres")  # held stopped until start()
    postgres.stop()
    try:
        ready = api.get("/health/ready")
        assert ready.status_code == 503
        # no token can be checked without the database: the admin sees the anonymous answer
        assert ready.json()["checks"]["database"] == "unavailable"
        assert api.get("/health").status_code == 200
        assert api.get("/apps").status_code == 503
    finally:
        postgres.start()
    eventually(
        lambda: api.get("/health/ready").status_code == 200,
        timeout=30,
        interval=0.2,
        message="the API did not become ready again",
    )
    assert api.get("/apps").status_code == 200


def test_redis_restart_loses_no_queued_deploy_and_reads_keep_working(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    redis = service(stack.settings, "redis")  # held stopped until start()
    slow = create_app(api, app_name, SLOW_STARTER)["id"]
    waiting = create_app(api, f"{app_name}-q", HELLO_V1)["id"]
    api.post(f"/apps/{slow}/deploy")
    queued = api.post(f"/apps/{waiting}/deploy").json()["id"]  # behind the slow one

    redis.stop()  # SIGTERM: Redis writes its append-only file and exits
    try:
        assert api.get(f"/apps/{waiting}").status_code == 200  # reads need no Redis
        ready = api.get("/health/ready")
        assert ready.status_code == 503 and "redis" in ready.json()["detail"]
        refused = api.post(f"/apps/{slow}/stop")
        assert refused.status_code in (409, 503)
    finally:
        redis.start()

    ended = wait_for_deployment(api, waiting, queued, timeout=60)
    assert ended["status"] == "succeeded", ended["error"]
    eventually(
        lambda: api.get("/health/ready").status_code == 200,
        timeout=30,
        interval=0.2,
        message="the API did not become ready again",
    )


class _Killed(BaseException):
    """The builder's SIGKILL, right after the deployment it asked for was committed."""


def test_a_builder_killed_after_asking_for_the_deploy_leaves_the_build_linked(
    api: httpx.Client, app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build's link to its deployment was written in a transaction of its own, after the
    deployment's: a builder killed between the two left the build looking undeployed, and
    the reconciler deployed it again (forcing the app's image back to the build's over
    whatever its owner did meanwhile). The link is now in the deployment's transaction."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    with get_session() as db:
        build = Build(
            app_id=app_id,
            number=1,
            status=BuildStatus.SUCCEEDED,
            upload_sha256="0" * 64,
            upload_bytes=0,
            context_files=1,
            context_bytes=0,
            dockerfile="Dockerfile",
            build_args={},
            deploy_on_success=True,
            image_tag=HELLO_V1,
            finished_at=now(),
        )
        db.add(build)
        db.commit()
        build_id = build.id

    def killed(*_: object) -> None:
        raise _Killed

    with monkeypatch.context() as patched:
        patched.setattr(records, "_queue", killed)  # runs right after the commit
        with pytest.raises(_Killed):
            build_pipeline._deploy(build_id, HELLO_V1)

    with get_session() as db:
        linked = db.get(Build, build_id)
        newest = db.scalar(select(func.max(Deployment.id)).where(Deployment.app_id == app_id))
        assert linked is not None and newest is not None
        assert linked.deployment_id == newest
    assert build_pipeline.deploy_undeployed(build_id) is False  # nothing to do again
    # The deployment was never handed to a worker: the reconciler does, and it ends
    ended = wait_for_deployment(api, app_id, newest, timeout=60)
    assert ended["status"] == "succeeded", ended
    deployments = api.get(f"/apps/{app_id}/deployments").json()
    assert [d["id"] for d in deployments] == [newest]


def test_a_delete_whose_job_was_lost_is_done_by_the_reconciler(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    """A delete answered 202 lived only as a job in Redis: Redis restarted without its data
    (or the worker died with it) and the delete was lost. The request is now in PostgreSQL
    first, and a delete that no job carries is queued again."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    deploy(api, app_id)
    assert platform_containers(stack.settings.instance_name, app_id)
    # As the API leaves it when Redis loses the job it queued: the request, and no job
    with get_session() as db:
        asked = now() - timedelta(minutes=1)
        db.execute(update(App).where(App.id == app_id).values(delete_requested_at=asked))
        db.commit()

    eventually(
        lambda: api.get(f"/apps/{app_id}").status_code == 404,
        timeout=30,
        interval=0.5,
        message="the reconciler did not finish the lost delete",
    )
    assert platform_containers(stack.settings.instance_name, app_id) == []
    host = {"Host": f"{app_name}.{stack.settings.apps_domain}"}
    assert router.get("/", headers=host).status_code == 404


def test_a_pending_delete_shows_in_the_apps_answers(api: httpx.Client, app_name: str) -> None:
    """A delete answered 202 is still under way: the app's JSON, alone and in the list, says
    since when, until the app is gone."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert api.get(f"/apps/{app_id}").json()["delete_requested_at"] is None
    # As the API leaves it after a 202 while the job waits; the reconciler takes such a
    # delete up again only after LIFECYCLE_JOB_GRACE, so these reads come first
    asked = now()
    with get_session() as db:
        db.execute(update(App).where(App.id == app_id).values(delete_requested_at=asked))
        db.commit()
    shown = api.get(f"/apps/{app_id}").json()["delete_requested_at"]
    assert shown is not None and datetime.fromisoformat(shown) == asked
    assert _listed(api, app_id)["delete_requested_at"] == shown
    assert api.delete(f"/apps/{app_id}").status_code in (202, 204)
    eventually(
        lambda: api.get(f"/apps/{app_id}").status_code == 404,
        timeout=30,
        message="the app was not deleted",
    )


def _listed(api: httpx.Client, app_id: int) -> dict[str, Any]:
    offset = 0
    while True:
        page = api.get("/apps", params={"limit": 500, "offset": offset}).json()
        assert page, f"app {app_id} is not listed"
        for app in page:
            if app["id"] == app_id:
                return dict(app)
        offset += len(page)


def test_a_delete_refused_for_a_deploy_started_meanwhile_is_not_tried_again(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    """The owner deployed after asking for the delete: the later request wins. The deploy
    request withdraws the delete; and a delete job that fails (here: the deployment is
    queued when it runs) withdraws its own request, so the reconciler does not delete the
    app later behind its owner's back."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]

    def ask_for_delete() -> None:
        with get_session() as db:
            db.execute(update(App).where(App.id == app_id).values(delete_requested_at=now()))
            db.commit()

    def delete_requested() -> bool:
        with get_session() as db:
            app = db.get(App, app_id)
            assert app is not None
            return app.delete_requested_at is not None

    worker = _worker(stack)
    worker.stop()  # the deployment stays queued: nothing runs it yet
    try:
        ask_for_delete()
        deployment = api.post(f"/apps/{app_id}/deploy").json()
        assert deployment["status"] == "queued", deployment
        assert not delete_requested()
        ask_for_delete()  # as if the delete came between the deploy and its job

        result = lifecycle.perform_delete(app_id)
    finally:
        worker.start(stack.env)

    assert result.failure is not None and "deployment started meanwhile" in result.message
    assert not delete_requested()
    ended = wait_for_deployment(api, app_id, deployment["id"], timeout=60)
    assert ended["status"] == "succeeded", ended
    assert api.get(f"/apps/{app_id}").status_code == 200


def test_an_owners_action_after_a_lost_delete_wins_over_it(
    api: httpx.Client, app_name: str
) -> None:
    """The delete's job was lost; before the reconciler queued it again, the owner stopped
    the app (they went on using it): the action withdraws the delete, and the app stays."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    deploy(api, app_id)
    with get_session() as db:
        # Within the grace (15 s), so the platform's reconciler leaves it to this test
        db.execute(update(App).where(App.id == app_id).values(delete_requested_at=now()))
        db.commit()
    stopped = api.post(f"/apps/{app_id}/stop")
    assert stopped.status_code in (200, 202), stopped.text
    with get_session() as db:
        app = db.get(App, app_id)
        assert app is not None and app.delete_requested_at is None
    assert lifecycle.requeue_lost_deletes() == []
    assert api.get(f"/apps/{app_id}").status_code == 200
