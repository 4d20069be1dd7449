"""Self-healing: an app meant to run whose container stopped without the platform asking
(a crash, `docker kill`, the OOM killer, an engine restart, a reboot) is started again, with
a pause of 1 s doubling to 5 min between tries, as Kubernetes' CrashLoopBackOff.

The platform is the only restarter: app containers have no Docker restart policy. Docker's
would not restart a `docker kill`, and its backoff is invisible; two restarters would fight.
The cost: while the worker is down, nothing restarts a dead app (the supervisor brings the
worker back within seconds; at boot, the platform's systemd unit).

Every step runs under the app's advisory lock, taken without waiting (a job working on the
app wins), and is written to PostgreSQL, so the backoff survives a worker restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from minipaas.clock import now
from minipaas.db.models import App, AppReplica, AppStatus
from minipaas.db.session import get_session
from minipaas.runtime import (
    ContainerState,
    Endpoint,
    RuntimeFailure,
    StartedContainer,
    get_runtime,
)
from minipaas.services import routing
from minipaas.services.app_lock import try_app_lock
from minipaas.services.deployments.events import record_event
from minipaas.services.deployments.outcome import DeploymentFailed, Serving, point_app_at
from minipaas.services.deployments.readiness import exit_message, wait_until_ready
from minipaas.services.endpoints import endpoint_of, set_endpoint

log = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 300.0
# A restarted container that stays up this long has recovered: the backoff starts over
STABLE_SECONDS = 10.0
# A restart waits this long for the health check; an app still up then is routed anyway
# (the health check gates deploys, it is no liveness probe), one that exits has crashed again
READY_SECONDS = 10.0

# The statuses whose owner wants the app to run
MEANT_TO_RUN = (AppStatus.RUNNING, AppStatus.CRASHED)


def backoff_delay(crash_streak: int) -> float:
    """The pause before the restart that follows the crash_streak-th crash in a row."""
    exponent = min(max(crash_streak - 1, 0), 20)  # 2**20 s is past the cap already
    return min(FIRST_DELAY_SECONDS * float(2**exponent), MAX_DELAY_SECONDS)


def is_due(next_restart_at: datetime | None, at: datetime) -> bool:
    return next_restart_at is None or next_restart_at <= at


def is_stable(last_restart_at: datetime | None, at: datetime) -> bool:
    return last_restart_at is None or at - last_restart_at >= timedelta(seconds=STABLE_SECONDS)


def note_crash(app_id: int) -> str | None:
    """A running app's container is not running: show it crashed, plan the next restart."""
    with try_app_lock(app_id) as free:
        if not free:
            return None
        with get_session() as db:
            app = db.get(App, app_id, with_for_update=True)
            if app is None or app.status is not AppStatus.RUNNING or app.container_id is None:
                return None
            state = get_runtime().state(app.container_id)
            if state is not None and state.running:
                return None  # back already (a job of the owner's, under the lock before us)
            done = _mark_gone(app) if state is None else _mark_crashed(app, state)
            db.commit()
        routing.publish_app_route(app_id)
    return f"app {app_id}: {done}"


def settle(app_id: int) -> str | None:
    """A restarted app that stayed up STABLE_SECONDS: the next crash waits 1 s again."""
    with try_app_lock(app_id) as free, get_session() as db:
        app = db.get(App, app_id, with_for_update=True)
        if not free or app is None or app.status is not AppStatus.RUNNING:
            return None
        if app.crash_streak == 0 or not is_stable(app.last_restart_at, now()):
            return None
        app.crash_streak = 0
        db.commit()
    return f"app {app_id}: up for {STABLE_SECONDS:g} s after its restart, backoff reset"


def restart_if_due(app_id: int) -> str | None:
    """Starts a crashed app's container again once its pause is over."""
    with try_app_lock(app_id) as free:
        if not free:
            return None
        started = _count_attempt(app_id)
        if started is None or isinstance(started, str):
            return started
        outcome = _start_and_wait(app_id, started)
    return f"app {app_id}: {outcome}"


def _count_attempt(app_id: int) -> StartedContainer | str | None:
    """Records the attempt before it is made (a restart that kills the worker still counts);
    returns the container to start, or what was done instead."""
    with get_session() as db:
        app = db.get(App, app_id, with_for_update=True)
        if app is None or app.status is not AppStatus.CRASHED or app.container_id is None:
            return None
        if not is_due(app.next_restart_at, now()):
            return None
        if get_runtime().state(app.container_id) is None:
            done = _mark_gone(app)
            db.commit()
            routing.publish_app_route(app_id)
            return f"app {app_id}: {done}"
        app.restart_count += 1
        app.last_restart_at = now()
        app.next_restart_at = None
        db.commit()
        return StartedContainer(app.container_id, app.container_name or "", 0)


def _start_and_wait(app_id: int, container: StartedContainer) -> str:
    runtime = get_runtime()
    with get_session() as db:
        app = db.get(App, app_id)
        assert app is not None  # deleting it needs the lock we hold
        health = app.run_settings().health
        deployment_id = app.current_deployment_id
    endpoint: Endpoint | None
    try:
        runtime.disable_restarts(container.id)
        endpoint = runtime.start(container.id)
        ready = StartedContainer(container.id, container.name, endpoint.port, endpoint.address)
        wait_until_ready(ready, health, patience=READY_SECONDS)
    except (RuntimeFailure, DeploymentFailed) as exc:
        state = runtime.state(container.id)
        if state is None or not state.running:
            return _crashed_again(app_id, state, exc)
        endpoint = runtime.published_endpoint(container.id)  # up but not healthy yet: route it
    return _restarted(app_id, endpoint, deployment_id)


def _restarted(app_id: int, endpoint: Endpoint | None, deployment_id: int | None) -> str:
    with get_session() as db:
        app = db.get(App, app_id, with_for_update=True)
        assert app is not None
        app.status = AppStatus.RUNNING
        endpoint = endpoint or endpoint_of(app)
        set_endpoint(app, endpoint)
        app.unhealthy_since = None  # restarted (a hung one is killed first): judged afresh
        crash = (app.status_detail or "").split(": ", 1)[-1].split("; last log lines")[0]
        app.status_detail = f"restarted by the platform ({app.restart_count} so far); {crash}"
        count = app.restart_count
        db.commit()
    routing.publish_app_route(app_id)
    done = f"restarted (restart {count}), serving on {endpoint}"
    if deployment_id is not None:
        record_event(deployment_id, "restarted", done)
    return done


def _crashed_again(app_id: int, state: ContainerState | None, exc: Exception) -> str:
    with get_session() as db:
        app = db.get(App, app_id, with_for_update=True)
        assert app is not None
        done = _mark_gone(app) if state is None else _mark_crashed(app, state)
        db.commit()
    routing.publish_app_route(app_id)
    log.info("restart of app %s failed: %s", app_id, str(exc).splitlines()[0])
    return done


def _mark_crashed(app: App, state: ContainerState) -> str:
    assert app.container_id is not None
    if any(replica.published_port is not None for replica in app.extra_replicas):
        # The other replicas keep serving: only this one leaves the route
        set_endpoint(app, None)
    app.unhealthy_since = None  # down now: the healer's to restart, not the prober's
    app.crash_streak += 1
    delay = backoff_delay(app.crash_streak)
    app.next_restart_at = now() + timedelta(seconds=delay)
    app.last_exit_code = state.exit_code
    app.status = AppStatus.CRASHED
    why = exit_message(app.container_id, state).replace("the container ", "", 1)
    app.status_detail = (
        f"crashed {app.crash_streak} times in a row ({app.restart_count} restarts so far), "
        f"next restart in {delay:g} s at {app.next_restart_at:%H:%M:%S} UTC: {why}"
    )
    done = f"crashed with code {state.exit_code}; restart in {delay:g} s"
    if app.current_deployment_id is not None:
        record_event(app.current_deployment_id, "crashed", done)
    return done


def _mark_gone(app: App) -> str:
    """A container removed by hand cannot be started again: only a deploy helps, unless
    another replica serves: it then takes the first one's place (a scale replaces it)."""
    spare = next((r for r in app.extra_replicas if r.published_port is not None), None)
    if spare is not None:
        point_app_at(app, Serving.of_replica(spare))
        app.extra_replicas.remove(spare)
        app.status = AppStatus.RUNNING
        app.forget_crashes()
        app.status_detail = (
            f"replica 0's container disappeared (removed outside mini-paas); replica "
            f"{spare.replica} took its place, the reconciler starts a new one"
        )
        return f"replica 0 gone, replica {spare.replica} took its place"
    point_app_at(app, None)
    app.status = AppStatus.FAILED
    app.next_restart_at = None
    app.status_detail = "its container disappeared (removed outside mini-paas); deploy again"
    return "container gone, marked failed"


# --- replicas past the first (AppReplica rows): each healed alone, the app serves on ------


def replica_down(replica_id: int) -> str | None:
    """A replica's container stopped: out of the route at once, restart planned."""
    with _locked_replica(replica_id) as found:
        if found is None:
            return None
        db, app, replica = found
        state = get_runtime().state(replica.container_id)
        if state is not None and state.running:
            return None
        if state is None:
            app.extra_replicas.remove(replica)  # removed by hand: a scale replaces it
            db.commit()
            routing.publish_app_route(app.id)
            return f"app {app.id} replica {replica.replica}: container gone, dropped"
        set_endpoint(replica, None)
        replica.unhealthy_since = None  # down now: the healer's to restart, not the prober's
        replica.crash_streak += 1
        delay = backoff_delay(replica.crash_streak)
        replica.next_restart_at = now() + timedelta(seconds=delay)
        db.commit()
        routing.publish_app_route(app.id)
        done = (
            f"replica {replica.replica} exited with code {state.exit_code}; restart in {delay:g} s"
        )
        if app.current_deployment_id is not None:
            record_event(app.current_deployment_id, "crashed", done)
        return f"app {app.id}: {done}"


def restart_replica(replica_id: int) -> str | None:
    """Starts a down replica again once its pause is over; it rejoins the route when healthy."""
    with _locked_replica(replica_id) as found:
        if found is None:
            return None
        db, app, replica = found
        if not is_due(replica.next_restart_at, now()):
            return None
        replica.restart_count += 1
        replica.last_restart_at = now()
        replica.next_restart_at = None
        db.commit()
        health = app.run_settings().health
        runtime = get_runtime()
        try:
            runtime.disable_restarts(replica.container_id)
            endpoint = runtime.start(replica.container_id)
            started = StartedContainer(
                replica.container_id, replica.container_name, endpoint.port, endpoint.address
            )
            wait_until_ready(started, health, patience=READY_SECONDS)
        except (RuntimeFailure, DeploymentFailed) as exc:
            replica.crash_streak += 1
            delay = backoff_delay(replica.crash_streak)
            replica.next_restart_at = now() + timedelta(seconds=delay)
            db.commit()
            why = str(exc).splitlines()[0]
            which = f"app {app.id} replica {replica.replica}"
            return f"{which}: restart failed ({why}), next in {delay:g} s"
        set_endpoint(replica, endpoint)
        replica.unhealthy_since = None
        db.commit()
        routing.publish_app_route(app.id)
        done = f"replica {replica.replica} restarted, serving on {endpoint}"
        if app.current_deployment_id is not None:
            record_event(app.current_deployment_id, "restarted", done)
        return f"app {app.id}: {done}"


def settle_replica(replica_id: int) -> str | None:
    with _locked_replica(replica_id) as found:
        if found is None:
            return None
        db, app, replica = found
        if replica.crash_streak == 0 or not is_stable(replica.last_restart_at, now()):
            return None
        replica.crash_streak = 0
        db.commit()
        return f"app {app.id} replica {replica.replica}: up {STABLE_SECONDS:g} s, backoff reset"


@contextmanager
def _locked_replica(replica_id: int) -> Iterator[tuple[Session, App, AppReplica] | None]:
    """The replica with its app, under the app's lock taken without waiting (a job working
    on the app wins); None when busy, gone, or the app is not meant to run."""
    with get_session() as db:
        app_id = db.scalar(select(AppReplica.app_id).where(AppReplica.id == replica_id))
    if app_id is None:
        yield None
        return
    with try_app_lock(app_id) as free, get_session() as db:
        app = db.get(App, app_id, with_for_update=True) if free else None
        replica = db.get(AppReplica, replica_id) if app is not None else None
        if app is None or replica is None or app.status not in MEANT_TO_RUN:
            yield None
            return
        yield db, app, replica
