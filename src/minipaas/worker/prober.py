"""The worker's active checks of running replicas (services/replica_health.py has the policy).

Its own thread beside the healer: a probe of a frozen app waits PROBE_TIMEOUT_SECONDS, which
the healer's 0.5 s loop for dead containers must not. Every round probes every running
replica of every app meant to run, side by side in a small pool, at <node address>:<published
port> as the runtime reported them, nowhere else. One worker process probes at a time (a
lease in Redis): the streaks are counted in one place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from minipaas import metrics, queue
from minipaas.clock import now
from minipaas.db.models import App, AppReplica, Deployment
from minipaas.db.session import database_unavailable, get_session
from minipaas.runtime import RuntimeFailure
from minipaas.runtime.base import LOOPBACK, Endpoint
from minipaas.services import replica_health
from minipaas.services.healing import MEANT_TO_RUN
from minipaas.services.probe import answers
from minipaas.services.replica_health import Probed, Streak

log = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 1.0
# 300 replicas answering in ~2 ms each take ~20 ms a round; 32 frozen ones take one timeout
PROBE_THREADS = 32
# The lease outlives a slow round (timeouts) but passes on soon after its holder died
LEASE_SECONDS = 5.0


@dataclass(frozen=True)
class Target:
    app_id: int
    probed: Probed
    path: str | None  # None: the app has no HTTP health page, any HTTP answer will do


# The health check of the deployment that runs: the one that started the first replica (a
# rollback's, from its route switch on, not the app's edited settings); else the current one
_starter = aliased(Deployment)
_STARTED_FIRST = (
    select(_starter.id)
    .where(_starter.app_id == App.id, _starter.container_id == App.container_id)
    .correlate(App)
    .limit(1)
    .scalar_subquery()
)
_RUNNING = func.coalesce(_STARTED_FIRST, App.current_deployment_id)
_RUNNING_PATH = func.coalesce(Deployment.health_check_path, App.health_check_path)
_RUNNING_SECONDS = case(
    (Deployment.id.is_not(None), Deployment.health_check_running_seconds),
    else_=App.health_check_running_seconds,
)


def targets() -> list[Target]:
    """Every running replica (it has a port) of every app meant to run: two queries."""
    with get_session() as db:
        return targets_in(db)


def targets_in(db: Session) -> list[Target]:
    firsts = db.execute(
        select(
            App.id,
            App.container_id,
            App.published_address,
            App.published_port,
            App.unhealthy_since,
            _RUNNING_PATH,
            _RUNNING_SECONDS,
        )
        .outerjoin(Deployment, Deployment.id == _RUNNING)
        .where(
            App.status.in_(MEANT_TO_RUN),
            App.container_id.is_not(None),
            App.published_port.is_not(None),
        )
    ).all()
    others = db.execute(
        select(
            AppReplica.app_id,
            AppReplica.replica,
            AppReplica.container_id,
            AppReplica.published_address,
            AppReplica.published_port,
            AppReplica.unhealthy_since,
            _RUNNING_PATH,
            _RUNNING_SECONDS,
        )
        .join(App, App.id == AppReplica.app_id)
        .outerjoin(Deployment, Deployment.id == _RUNNING)
        .where(App.status.in_(MEANT_TO_RUN), AppReplica.published_port.is_not(None))
    ).all()
    # The queries keep only rows with a container and a port
    found = [
        Target(app_id, Probed(0, str(cid), _at(address, port), since), _path(path, seconds))
        for app_id, cid, address, port, since, path, seconds in firsts
    ]
    found += [
        Target(app_id, Probed(replica, cid, _at(address, port), since), _path(path, seconds))
        for app_id, replica, cid, address, port, since, path, seconds in others
    ]
    return found


def _at(address: str | None, port: int | None) -> Endpoint:
    # As services/endpoints.py reads rows: a NULL address is the host's loopback
    return Endpoint(address or LOOPBACK, port or 0)


def _path(path: str, running_seconds: int | None) -> str | None:
    return None if running_seconds is not None else path


class Prober:
    """The streaks of probes in a row, per (app, replica), between rounds."""

    def __init__(self) -> None:
        self.streaks: dict[tuple[int, int], Streak] = {}
        self._failing_apps: set[int] = set()

    def probe_once(self, pool: ThreadPoolExecutor) -> list[str]:
        found = targets()
        results = list(pool.map(self._probe, found))
        by_app: dict[int, list[tuple[Probed, Streak]]] = defaultdict(list)
        for target, ok in zip(found, results, strict=True):
            key = (target.app_id, target.probed.replica)
            streak = self.streaks.get(key)
            probed = target.probed
            if streak is None or (streak.container_id, streak.endpoint) != (
                probed.container_id,
                probed.endpoint,
            ):
                streak = self.streaks[key] = Streak(probed.container_id, probed.endpoint)
            streak.count(ok)
            by_app[target.app_id].append((target.probed, streak))
        live = {(t.app_id, t.probed.replica) for t in found}
        for gone in set(self.streaks) - live:
            del self.streaks[gone]
        at = now()
        actions: list[str] = []
        for app_id, replicas in by_app.items():
            verdict = replica_health.decide(replicas, at)
            self._report(app_id, verdict.all_failing, len(replicas))
            if not verdict.changes:
                continue
            try:
                actions += replica_health.apply(app_id, [p for p, _ in replicas], verdict)
            except Exception as exc:  # one app's failure must not hold up the others'
                log.warning("prober: app %s: %s", app_id, exc, exc_info=not _expected(exc))
                continue
            for replica in verdict.kill:  # counted afresh once it runs again
                self.streaks.pop((app_id, replica), None)
        self._failing_apps &= set(by_app)
        return actions

    @staticmethod
    def _probe(target: Target) -> bool:
        return answers(target.probed.endpoint, path=target.path, timeout=PROBE_TIMEOUT_SECONDS)

    def _report(self, app_id: int, all_failing: bool, running: int) -> None:
        """Said once when it starts and once when it ends, not every second."""
        if all_failing and app_id not in self._failing_apps:
            self._failing_apps.add(app_id)
            log.warning(
                "prober: app %s: all %s running replicas fail their probes; its route is "
                "kept as it is (an empty one would serve nobody)",
                app_id,
                running,
            )
        elif not all_failing and app_id in self._failing_apps:
            self._failing_apps.discard(app_id)
            log.info("prober: app %s: a replica answers its probes again", app_id)


class ProberThread(threading.Thread):
    """Runs a probe round every PROBE_INTERVAL_SECONDS until stopped; never dies of an
    exception."""

    def __init__(self, interval: float = PROBE_INTERVAL_SECONDS) -> None:
        super().__init__(name="prober", daemon=True)
        metrics.RECONCILER_ACTIONS.labels("probe")
        self.interval = interval
        self.prober = Prober()
        self._stopping = threading.Event()
        self._last_failure = ""

    def run(self) -> None:
        delay = self.interval
        with ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="probe") as pool:
            while not self._stopping.wait(delay):
                started = time.monotonic()
                self._round(pool)
                delay = max(self.interval - (time.monotonic() - started), 0.0)

    def _round(self, pool: ThreadPoolExecutor) -> None:
        if not queue.hold_lease("prober", LEASE_SECONDS):
            self.prober.streaks.clear()  # another worker probes; counted afresh if it dies
            return
        try:
            actions = self.prober.probe_once(pool)
        except Exception as exc:  # database down: said once, not every second
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if message != self._last_failure:
                log.warning("prober: round failed: %s", message, exc_info=not _expected(exc))
            self._last_failure = message
            return
        self._last_failure = ""
        if actions:
            metrics.RECONCILER_ACTIONS.labels("probe").inc(len(actions))
        for action in actions:
            log.info("prober: %s", action)

    def stop(self) -> None:
        self._stopping.set()


def _expected(exc: Exception) -> bool:
    return isinstance(exc, RuntimeFailure) or database_unavailable(exc)
