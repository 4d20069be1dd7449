"""The worker's self-healing loop (services/healing.py has the policy).

Its own thread, separate from the reconciler: a backoff that starts at 1 s needs a look
every HEAL_POLL_SECONDS, and each look is cheap (one query, one engine call, and nothing
more while no app is crashed or due).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import select

from minipaas import metrics, queue
from minipaas.clock import now
from minipaas.db.models import App, AppReplica, AppStatus
from minipaas.db.session import database_unavailable, get_session
from minipaas.runtime import RuntimeFailure, get_runtime
from minipaas.services import healing

log = logging.getLogger(__name__)

HEAL_POLL_SECONDS = 0.5


def heal_once() -> list[str]:
    """One look at every app meant to run; returns what it did, one line per repair."""
    with get_session() as db:
        watched = db.execute(
            select(
                App.id,
                App.status,
                App.container_id,
                App.crash_streak,
                App.last_restart_at,
                App.next_restart_at,
            ).where(App.status.in_(healing.MEANT_TO_RUN), App.container_id.is_not(None))
        ).all()
        replicas = db.execute(
            select(
                AppReplica.id,
                AppReplica.container_id,
                AppReplica.published_port,
                AppReplica.crash_streak,
                AppReplica.last_restart_at,
                AppReplica.next_restart_at,
            )
            .join(App, App.id == AppReplica.app_id)
            .where(App.status.in_(healing.MEANT_TO_RUN))
        ).all()
    if not watched and not replicas:
        return []
    running = get_runtime().running_container_ids()
    at = now()
    actions = []
    for app_id, status, container_id, streak, restarted_at, due_at in watched:
        if status is AppStatus.CRASHED:
            step = healing.restart_if_due if healing.is_due(due_at, at) else None
        elif container_id not in running:
            step = healing.note_crash
        elif streak and healing.is_stable(restarted_at, at):
            step = healing.settle
        else:
            step = None
        done = _one_app(step, app_id) if step else None
        if done:
            actions.append(done)
    for replica_id, container_id, port, streak, restarted_at, due_at in replicas:
        replica_step: Callable[[int], str | None] | None
        if port is None:  # down: started again when due (or picked up if it runs again)
            replica_step = healing.restart_replica if healing.is_due(due_at, at) else None
        elif container_id not in running:
            replica_step = healing.replica_down
        elif streak and healing.is_stable(restarted_at, at):
            replica_step = healing.settle_replica
        else:
            replica_step = None
        done = _one_app(replica_step, replica_id) if replica_step else None
        if done:
            actions.append(done)
    return actions


def _one_app(step: Callable[[int], str | None], app_id: int) -> str | None:
    """One app's failure (its route refused, say) must not hold up the others'."""
    try:
        return step(app_id)
    except Exception as exc:
        if not _expected(exc):
            log.exception("healer: app %s failed", app_id)
        else:
            log.warning("healer: app %s skipped: %s", app_id, exc)
        return None


class HealerThread(threading.Thread):
    """Runs heal_once every HEAL_POLL_SECONDS until stopped; never dies of an exception."""

    def __init__(self, interval: float = HEAL_POLL_SECONDS) -> None:
        super().__init__(name="healer", daemon=True)
        metrics.RECONCILER_ACTIONS.labels("heal")
        self.interval = interval
        self._stopping = threading.Event()
        self._last_failure = ""

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            # Every worker runs this thread: one look per interval for the whole platform
            # (each look lists the engine's containers; 4 workers made 8 lists a second)
            if not queue.claim_turn("healer", self.interval):
                continue
            try:
                actions = heal_once()
            except Exception as exc:  # engine or database down: said once, not twice a second
                self._report(exc)
                continue
            self._last_failure = ""
            if actions:
                metrics.RECONCILER_ACTIONS.labels("heal").inc(len(actions))
            for action in actions:
                log.info("healer: %s", action)

    def _report(self, exc: Exception) -> None:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if message != self._last_failure:
            log.warning("healer: pass failed: %s", message, exc_info=not _expected(exc))
        self._last_failure = message

    def stop(self) -> None:
        self._stopping.set()


def _expected(exc: Exception) -> bool:
    return isinstance(exc, RuntimeFailure) or database_unavailable(exc)
