"""Which running replicas serve: the prober's policy (worker/prober.py runs it).

A replica that fails FAILS_TO_LEAVE probes in a row leaves the route while another serves;
it comes back after PASSES_TO_RETURN good ones in a row. One out of the route and still
failing after HUNG_RESTART_SECONDS is killed: the healer then restarts it like a crashed one.
The streaks live in the prober's memory (a new prober starts counting afresh); the decision
(`unhealthy_since`) lives in PostgreSQL, so every route published from it leaves the replica
out. The functions on top are pure; `apply` writes a verdict under the app's lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from minipaas.clock import now
from minipaas.db.models import App, AppReplica
from minipaas.db.session import get_session
from minipaas.runtime import Endpoint, get_runtime
from minipaas.services import routing
from minipaas.services.app_lock import try_app_lock
from minipaas.services.deployments.events import record_event
from minipaas.services.endpoints import endpoint_of
from minipaas.services.healing import MEANT_TO_RUN

log = logging.getLogger(__name__)

FAILS_TO_LEAVE = 2
PASSES_TO_RETURN = 2
HUNG_RESTART_SECONDS = 30.0


@dataclass(frozen=True)
class Probed:
    """One running replica as the prober saw it this round."""

    replica: int  # 0 is the app's own row, 1.. its AppReplica rows
    container_id: str
    endpoint: Endpoint  # as the runtime reported it: the only place a probe connects to
    out_since: datetime | None  # out of the route since (None: in it)


@dataclass
class Streak:
    """Probes in a row of one container at one endpoint (a new container starts afresh)."""

    container_id: str
    endpoint: Endpoint
    fails: int = 0
    passes: int = 0

    def count(self, ok: bool) -> None:
        if ok:
            self.passes, self.fails = self.passes + 1, 0
        else:
            self.fails, self.passes = self.fails + 1, 0


@dataclass
class Verdict:
    take_out: list[int] = field(default_factory=list)
    put_back: list[int] = field(default_factory=list)
    kill: list[int] = field(default_factory=list)
    # Every running replica fails: the route is kept as it is (an empty one serves nobody)
    all_failing: bool = False

    @property
    def changes(self) -> bool:
        return bool(self.take_out or self.put_back or self.kill)


def decide(replicas: list[tuple[Probed, Streak]], at: datetime) -> Verdict:
    """What to do with one app's running replicas after a round of probes."""
    verdict = Verdict()
    failing = {p.replica for p, s in replicas if s.fails >= FAILS_TO_LEAVE}
    verdict.all_failing = bool(replicas) and len(failing) == len(replicas)
    verdict.put_back = [
        p.replica for p, s in replicas if p.out_since is not None and s.passes >= PASSES_TO_RETURN
    ]
    leaving = [p.replica for p, _ in replicas if p.out_since is None and p.replica in failing]
    staying = [
        p.replica
        for p, _ in replicas
        if (p.out_since is None and p.replica not in failing) or p.replica in verdict.put_back
    ]
    if not staying:
        return verdict  # nothing healthy would be left: take nobody out, kill nobody
    verdict.take_out = leaving
    hung_since = at - timedelta(seconds=HUNG_RESTART_SECONDS)
    verdict.kill = [
        p.replica
        for p, _ in replicas
        if p.out_since is not None and p.out_since <= hung_since and p.replica in failing
    ]
    return verdict


def apply(app_id: int, probed: list[Probed], verdict: Verdict) -> list[str]:
    """Writes the verdict (only for replicas still the containers probed), publishes the
    route, kills the hung ones. Nothing when a job works on the app: the next round retries."""
    seen = {p.replica: p for p in probed}
    with try_app_lock(app_id) as free:
        if not free:
            return []
        with get_session() as db:
            app = db.get(App, app_id, with_for_update=True)
            if app is None or app.status not in MEANT_TO_RUN:
                return []
            rows: dict[int, App | AppReplica] = {0: app}
            rows.update((r.replica, r) for r in app.extra_replicas)
            # Only rows still running the container probed (not moved on by a deploy, say)
            same = {
                n: row
                for n, row in rows.items()
                if n in seen and (row.container_id, endpoint_of(row)) == _where(seen[n])
            }
            done = _mark(same, verdict, now())
            if not any(
                r.published_port is not None and r.unhealthy_since is None for r in rows.values()
            ):
                db.rollback()  # raced with a crash: never leave the app without a route
                return []
            db.commit()
            deployment_id = app.current_deployment_id
        if done:
            routing.publish_app_route(app_id)
        for replica in verdict.kill:
            if replica in same:
                # The healer sees it exited and restarts it with its backoff (worker/healer.py)
                get_runtime().kill(seen[replica].container_id)
                done.append(
                    f"replica {replica} answered no probe for {HUNG_RESTART_SECONDS:g} s: "
                    "killed, the healer restarts it"
                )
    if deployment_id is not None:
        for line in done:
            record_event(deployment_id, "probe", line)
    return [f"app {app_id}: {line}" for line in done]


def _where(probed: Probed) -> tuple[str, Endpoint]:
    return probed.container_id, probed.endpoint


def _mark(rows: dict[int, App | AppReplica], verdict: Verdict, at: datetime) -> list[str]:
    done = []
    for replica in verdict.take_out:
        row = rows.get(replica)
        if row is not None and row.unhealthy_since is None:
            row.unhealthy_since = at
            done.append(f"replica {replica} failed {FAILS_TO_LEAVE} probes: out of the route")
    for replica in verdict.put_back:
        row = rows.get(replica)
        if row is not None and row.unhealthy_since is not None:
            row.unhealthy_since = None
            done.append(f"replica {replica} answers again: back in the route")
    return done
