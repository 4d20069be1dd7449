"""Lifecycle failures are answered by kind: conflict 409, engine or router down 503, bug 500."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker
import httpx
import pytest

from minipaas.db.models import AppAction
from minipaas.db.session import get_session
from minipaas.host.platform import processes
from minipaas.services import app_actions, routing
from minipaas.services.errors import InternalError
from minipaas.services.job_results import FailureKind
from minipaas.services.state import Action
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.processes import ManagedProcess
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


@contextmanager
def worker_with(stack: Stack, **broken: str) -> Iterator[None]:
    """The stack's worker is replaced by one whose environment breaks a part, then back."""
    worker = next(p for p in processes(stack.settings) if p.name == "worker")
    settings = stack.settings
    substitute = ManagedProcess("worker-broken", ("worker",), settings.run_dir, settings.log_dir)
    worker.stop()
    substitute.start({**stack.env, **broken})
    try:
        yield
    finally:
        substitute.stop()
        worker.start(stack.env)


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        ({"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "engine"),
        # a worker that finds no router: its control socket is under another DATA_DIR
        # (no reconciler pass but the first, which cannot start a second nginx on the port)
        ({"DATA_DIR": "{data_dir}/elsewhere", "RECONCILE_INTERVAL_SECONDS": "3600"}, "router"),
    ],
    ids=["docker-engine-down", "router-refuses"],
)
def test_a_part_down_during_stop_is_503_and_changes_nothing(
    stack: Stack,
    api: httpx.Client,
    router: httpx.Client,
    app_name: str,
    broken: dict[str, str],
    named: str,
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    env = {name: value.format(data_dir=stack.settings.data_dir) for name, value in broken.items()}
    with worker_with(stack, **env):
        response = api.post(f"/apps/{app_id}/stop")
    assert response.status_code == 503, response.text
    assert named in response.json()["detail"]
    assert api.get(f"/apps/{app_id}").json()["status"] == "running"
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"


def test_a_conflict_found_by_the_worker_is_409(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    deployment = deploy(api, app_id)
    assert api.post(f"/apps/{app_id}/stop").status_code == 200
    docker.from_env().containers.get(deployment["container_id"]).remove(force=True)
    response = api.post(f"/apps/{app_id}/start")
    assert response.status_code == 409, response.text
    assert "no longer exists; deploy the app again" in response.json()["detail"]


def test_an_unforeseen_failure_is_500_and_logged(
    stack: Stack,
    api: httpx.Client,
    app_name: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No real fault produces a bug on demand, so a bug is planted in this process's router
    call; the action runs here against the real database, engine and nginx."""
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"

    def planted_bug(*_: object) -> None:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(routing, "publish_app_route", planted_bug)
    with get_session() as db:
        row = AppAction(app_id=app_id, action=Action.STOP)
        db.add(row)
        db.commit()
        action_id = row.id
    result = app_actions.run_action(action_id)
    assert result.failure is FailureKind.INTERNAL
    assert "ZeroDivisionError" in result.message and "worker log" in result.message
    assert "planted" in caplog.text  # the traceback went to the log
    with pytest.raises(InternalError) as raised:
        result.raise_if_failed()
    assert raised.value.status_code == 500
    monkeypatch.undo()
    assert api.get(f"/apps/{app_id}").json()["status"] == "running"
    # The action's row says how it ended, for whoever follows it
    ended = api.get(f"/apps/{app_id}/actions/{action_id}").json()
    assert ended["status"] == "failed" and ended["failure"] == "internal", ended
