from __future__ import annotations

import pytest

from minipaas.db.models import AppStatus
from minipaas.services.errors import Conflict
from minipaas.services.state import Action, check_action, status_after

ALLOWED = {
    # (action, status) pairs that fit, for an app that has a container
    (Action.STOP, AppStatus.RUNNING),
    (Action.START, AppStatus.STOPPED),
    (Action.START, AppStatus.FAILED),
    (Action.RESTART, AppStatus.RUNNING),
    (Action.RESTART, AppStatus.STOPPED),
    (Action.RESTART, AppStatus.FAILED),
    (Action.REMOVE, AppStatus.RUNNING),
    (Action.REMOVE, AppStatus.STOPPED),
    (Action.REMOVE, AppStatus.FAILED),
    # crashed: the platform restarts it, and its owner may still act on it
    (Action.STOP, AppStatus.CRASHED),
    (Action.START, AppStatus.CRASHED),
    (Action.RESTART, AppStatus.CRASHED),
    (Action.REMOVE, AppStatus.CRASHED),
    # scale: replicas start or stop beside a running (or crashed: the others serve) app
    (Action.SCALE, AppStatus.RUNNING),
    (Action.SCALE, AppStatus.CRASHED),
}


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize(
    "status", [s for s in AppStatus if s not in (AppStatus.CREATED, AppStatus.DEPLOYING)]
)
def test_actions_on_an_app_with_a_container(action: Action, status: AppStatus) -> None:
    if (action, status) in ALLOWED:
        check_action(action, status, has_container=True)
    else:
        with pytest.raises(Conflict):
            check_action(action, status, has_container=True)


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("status", list(AppStatus))
def test_no_action_without_a_container(action: Action, status: AppStatus) -> None:
    with pytest.raises(Conflict) as raised:
        check_action(action, status, has_container=False)
    assert "deploy" in raised.value.message


@pytest.mark.parametrize("action", list(Action))
def test_no_action_while_deploying(action: Action) -> None:
    with pytest.raises(Conflict, match="deployment is in progress"):
        check_action(action, AppStatus.DEPLOYING, has_container=True)


def test_status_after_each_action() -> None:
    assert status_after(Action.STOP) is AppStatus.STOPPED
    assert status_after(Action.REMOVE) is AppStatus.STOPPED
    assert status_after(Action.START) is AppStatus.RUNNING
    assert status_after(Action.RESTART) is AppStatus.RUNNING


def test_restart_backoff_doubles_from_one_second_to_five_minutes() -> None:
    from minipaas.services.healing import backoff_delay

    assert [backoff_delay(n) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert backoff_delay(9) == 256 and backoff_delay(10) == 300 and backoff_delay(10_000) == 300
