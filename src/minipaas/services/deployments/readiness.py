"""Is a new container healthy? Used by deploys and by start and restart."""

from __future__ import annotations

import time
from collections.abc import Callable

from minipaas.config import get_settings
from minipaas.db.run_settings import HealthCheck
from minipaas.runtime import ContainerState, StartedContainer, get_runtime
from minipaas.services.deployments.outcome import DeploymentFailed
from minipaas.services.deployments.port_hints import wrong_port_reason
from minipaas.services.probe import http_status

LOG_LINES_IN_ERRORS = 20
# How often a deploy reports that it is still waiting, in its events
REPORT_EVERY_SECONDS = 2.0
# An app may open other ports before its own: only then is "listens elsewhere" a verdict
WRONG_PORT_GRACE_SECONDS = 3.0


def _nothing(_: str) -> None:
    return None


def wait_until_ready(
    started: StartedContainer,
    health: HealthCheck,
    *,
    check_cancelled: Callable[[], None] = lambda: None,
    report: Callable[[str], None] = _nothing,
    patience: float | None = None,
    internal_port: int | None = None,
) -> None:
    """Waits until GET health.path answers below 500 (or the container has run for
    health.running_seconds). Fails fast when the container exits or `check_cancelled` raises,
    and after `patience` (default READY_TIMEOUT_SECONDS) with the last answer and log lines.
    With `internal_port`, an app that plainly listens elsewhere fails after WRONG_PORT_GRACE."""
    settings = get_settings()
    started_at = time.monotonic()
    if patience is None:
        patience = max(settings.ready_timeout_seconds, (health.running_seconds or 0) + 5)
    interval = settings.ready_poll_interval_seconds
    last_answer = "no HTTP answer"
    next_report = started_at
    while True:
        if health.running_seconds is not None:
            _raise_if_exited(started.id)
            check_cancelled()
            if time.monotonic() - started_at >= health.running_seconds:
                return
        else:
            # Probe first: an answer through the published port proves the container runs,
            # so a healthy app is not held up by an engine call and a query (~5 ms) first
            status = http_status(started.endpoint, path=health.path, timeout=1.0)
            if status is not None and status < 500:
                return
            _raise_if_exited(started.id)
            check_cancelled()
            if status is not None:
                last_answer = f"GET {health.path} answered {status}"
            elif (
                internal_port is not None
                and time.monotonic() >= next_report
                and time.monotonic() - started_at >= WRONG_PORT_GRACE_SECONDS
            ):
                _raise_if_wrong_port(started.id, internal_port)
            if time.monotonic() >= next_report:
                report(f"waiting for health: {last_answer}")
                next_report = time.monotonic() + REPORT_EVERY_SECONDS
        if time.monotonic() - started_at >= patience:
            raise DeploymentFailed(_not_healthy_message(started.id, patience, last_answer))
        time.sleep(interval)
        interval = min(interval * 1.3, 0.25)


def _raise_if_wrong_port(container_id: str, internal_port: int) -> None:
    reason = wrong_port_reason(container_id, internal_port)
    if reason is not None:
        logs = get_runtime().tail_logs(container_id, LOG_LINES_IN_ERRORS)
        raise DeploymentFailed(f"{reason}. Last log lines:\n{logs or '(none)'}")


def _raise_if_exited(container_id: str) -> None:
    runtime = get_runtime()
    state = runtime.state(container_id)
    if state is None:
        raise DeploymentFailed("the container disappeared while starting (removed by hand?)")
    if not state.running or state.restart_count > 0:
        # The reason the owner reads: an OOM kill must not read as a plain exit
        settled = runtime.exit_state(container_id) if not state.running else state
        raise DeploymentFailed(exit_message(container_id, settled or state, while_starting=True))


def _not_healthy_message(container_id: str, patience: float, last_answer: str) -> str:
    logs = get_runtime().tail_logs(container_id, LOG_LINES_IN_ERRORS)
    return (
        f"the app did not become healthy within {patience:.0f} s ({last_answer}); check "
        "internal_port, health_check_path and that the app listens on 0.0.0.0, not "
        f"127.0.0.1. Last log lines:\n{logs}"
    )


def exit_message(container_id: str, state: ContainerState, *, while_starting: bool = False) -> str:
    """Why a container stopped: its exit code or OOM, and its last log lines
    (`while_starting`: ContainerState.stop_reason)."""
    logs = get_runtime().tail_logs(container_id, LOG_LINES_IN_ERRORS)
    reason = state.stop_reason(while_starting=while_starting)
    return (
        f"the container {reason} with code {state.exit_code}; last log lines:\n{logs or '(none)'}"
    )
