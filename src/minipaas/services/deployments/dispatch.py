"""Fair dispatch: each member's deployments get a few workers; the rest wait in order.

A deployment is recorded with `dispatched_at` NULL. It is handed to the workers (its job is
queued) only while its owner has fewer than DEPLOYS_PER_MEMBER dispatched deployments still
active, so one member's slow deploys cannot occupy every worker: other members' and admins'
deployments are queued to RQ at once and reach the free workers. Admins' apps have no cap.

Dispatching happens when a deployment is requested, when one ends (jobs.deploy), when one is
cancelled, and in every reconciler pass (so nothing waits forever if a hook was missed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import bindparam, exists, func, select, text
from sqlalchemy.orm import Session, aliased

from minipaas import queue
from minipaas.clock import now
from minipaas.config import Settings, get_settings, worker_count
from minipaas.db.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    App,
    Deployment,
    DeploymentEvent,
    DeploymentStatus,
    User,
    UserRole,
)
from minipaas.db.session import get_session, read_engine
from minipaas.worker import jobs

log = logging.getLogger(__name__)

# First key of the two-key advisory lock that orders dispatches of one owner
_DISPATCH_LOCK_NAMESPACE = 0x6D71


def member_slots(settings: Settings) -> int:
    """DEPLOYS_PER_MEMBER, or half the worker processes (at least one)."""
    if settings.deploys_per_member:
        return settings.deploys_per_member
    return max(1, worker_count(settings) // 2)


@dataclass(frozen=True)
class Dispatched:
    deployment_id: int
    job_id: str | None
    error: str | None = None


def dispatch_waiting(db: Session, owner_id: int | None) -> list[Dispatched]:
    """Hands the owner's oldest waiting deployments to the workers while slots are free.

    Commits. A job that could not be queued (Redis down) leaves its deployment dispatched
    without a job: the reconciler queues it again under the same id (or the caller fails it).
    """
    dispatched = []
    for deployment_id in _claim_slots(db, owner_id):
        try:
            dispatched.append(Dispatched(deployment_id, jobs.enqueue_deploy(deployment_id)))
        except queue.QueueUnavailable as exc:
            dispatched.append(Dispatched(deployment_id, None, str(exc)))
    return dispatched


def _claim_slots(db: Session, owner_id: int | None) -> list[int]:
    """Marks the deployments that get a slot as dispatched, with the id their job gets (fixed
    per deployment: recorded here, in the slot's transaction, rather than in one more after
    the job is queued), under the owner's lock."""
    if owner_id is not None:
        db.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :owner)"),
            {"ns": _DISPATCH_LOCK_NAMESPACE, "owner": owner_id},
        )
    owner_apps = select(App.id).where(
        App.owner_id == owner_id if owner_id is not None else App.owner_id.is_(None)
    )
    waiting = db.scalars(
        select(Deployment)
        .where(
            Deployment.app_id.in_(owner_apps),
            Deployment.status == DeploymentStatus.QUEUED,
            Deployment.dispatched_at.is_(None),
        )
        .order_by(Deployment.id)
    ).all()
    if not waiting:
        db.commit()
        return []
    free = len(waiting)
    if owner_id is not None and not _is_admin(db, owner_id):
        busy = _dispatched_active(db, owner_id)
        free = max(0, member_slots(get_settings()) - busy)
    chosen = list(waiting[:free])
    for deployment in chosen:
        deployment.dispatched_at = now()
        deployment.job_id = jobs.deploy_job_id(deployment.id)
        db.add(
            DeploymentEvent(
                deployment_id=deployment.id, kind="dispatched", message="handed to the workers"
            )
        )
    db.commit()  # ends the lock's transaction: the slots are taken
    return [deployment.id for deployment in chosen]


def _is_admin(db: Session, owner_id: int) -> bool:
    # By primary key: no query when the session has the owner already (a deploy request)
    owner = db.get(User, owner_id)
    return owner is not None and owner.role is UserRole.ADMIN


def _dispatched_active(db: Session, owner_id: int) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(Deployment)
            .join(App, App.id == Deployment.app_id)
            .where(
                App.owner_id == owner_id,
                Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES),
                Deployment.dispatched_at.is_not(None),
            )
        )
        or 0
    )


def queue_position(db: Session, deployment: Deployment) -> int | None:
    """1 for the owner's next deployment to get a slot; None once it has one (or ended)."""
    if deployment.status is not DeploymentStatus.QUEUED or deployment.dispatched_at is not None:
        return None
    owner_id = db.scalar(select(App.owner_id).where(App.id == deployment.app_id))
    ahead = db.scalar(
        select(func.count())
        .select_from(Deployment)
        .join(App, App.id == Deployment.app_id)
        .where(
            App.owner_id == owner_id,
            Deployment.status == DeploymentStatus.QUEUED,
            Deployment.dispatched_at.is_(None),
            Deployment.id < deployment.id,
        )
    )
    return (ahead or 0) + 1


def waiting_message(db: Session, deployment: Deployment) -> str:
    position = queue_position(db, deployment) or 1
    slots = member_slots(get_settings())
    return (
        f"waiting for a worker: the owner's {slots} deploy slot(s) are busy "
        f"(DEPLOYS_PER_MEMBER); position {position} in the owner's line"
    )


# The deployment's owner, if one of the owner's deployments waits for a slot (else no row)
_WAITING = aliased(Deployment)
_WAITING_APP = aliased(App)
_OWNER_WITH_WAITING = (
    select(App.owner_id)
    .join(Deployment, Deployment.app_id == App.id)
    .where(
        Deployment.id == bindparam("deployment_id"),
        App.owner_id.is_not(None),
        exists().where(
            _WAITING.app_id == _WAITING_APP.id,
            _WAITING_APP.owner_id == App.owner_id,
            _WAITING.status == DeploymentStatus.QUEUED,
            _WAITING.dispatched_at.is_(None),
        ),
    )
)


def dispatch_after(deployment_id: int) -> None:
    """A deployment ended: its owner's next waiting one may start (best effort; the
    reconciler dispatches anything missed)."""
    try:
        # Most ends leave nobody waiting: asked on the autocommit pool in one round trip,
        # before the owner's lock and its transaction (five). One that starts to wait after
        # this look was refused a slot this deployment held, so was recorded before it ended,
        # and is seen here (the reconciler's pass catches anything else)
        with read_engine().connect() as connection:
            owner_id = connection.scalar(_OWNER_WITH_WAITING, {"deployment_id": deployment_id})
        if owner_id is None:
            return
        with get_session() as db:
            dispatch_waiting(db, owner_id)
    except Exception as exc:  # the deployment itself is over; never fail its job for this
        log.warning("dispatch after deployment %s failed: %s", deployment_id, exc)


def dispatch_all_waiting() -> list[str]:
    """The reconciler's step: every owner with a waiting deployment and a free slot."""
    done = []
    with get_session() as db:
        owners = db.scalars(
            select(App.owner_id)
            .join(Deployment, Deployment.app_id == App.id)
            .where(Deployment.status == DeploymentStatus.QUEUED, Deployment.dispatched_at.is_(None))
            .distinct()
        ).all()
        for owner_id in owners:
            for item in dispatch_waiting(db, owner_id):
                done.append(f"dispatched deployment {item.deployment_id}")
    return done
