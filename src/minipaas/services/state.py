"""The app lifecycle state machine: which action fits which state."""

from __future__ import annotations

from minipaas.db.models import Action, AppStatus
from minipaas.services.errors import Conflict

__all__ = ["Action", "check_action", "status_after"]


def check_action(action: Action, status: AppStatus, has_container: bool) -> None:
    """Raises Conflict with a message saying what would fit, when the action does not."""
    if status is AppStatus.DEPLOYING:
        raise Conflict(f"cannot {action} while a deployment is in progress; wait for it to end")
    if not has_container:
        raise Conflict(f"cannot {action}: the app has no container; deploy it first")
    # A crashed app is still meant to run (the platform restarts it): its owner may stop it
    if action is Action.STOP and status not in (AppStatus.RUNNING, AppStatus.CRASHED):
        raise Conflict(f"cannot stop: the app is {status}, not running")
    if action is Action.SCALE and status not in (AppStatus.RUNNING, AppStatus.CRASHED):
        raise Conflict(f"cannot scale now: the app is {status}; its next start or deploy does")
    if action is Action.START and status is AppStatus.RUNNING:
        raise Conflict("cannot start: the app is already running; use restart")


def status_after(action: Action) -> AppStatus:
    """What the app is once the action is done (a scale leaves a running app running)."""
    return AppStatus.STOPPED if action in (Action.STOP, Action.REMOVE) else AppStatus.RUNNING
