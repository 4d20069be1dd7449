"""Stop, start, restart and remove as rows: the API records one and answers, a worker runs it.

The row is written before the job is queued, so an action is never lost: the reconciler
queues a lost job again, and ends an action whose worker died. The API waits a little
(ACTION_WAIT_SECONDS, without holding a thread) and answers 200 when the action ended in that
time, else 202 with the action to follow at /apps/{id}/actions/{action_id}.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipaas import queue
from minipaas.clock import now
from minipaas.db.models import (
    PENDING_ACTION_STATUSES,
    Action,
    ActionStatus,
    AppAction,
    User,
)
from minipaas.db.session import get_session
from minipaas.services import lifecycle
from minipaas.services.app_lock import app_lock, try_app_lock
from minipaas.services.apps import get_app, withdraw_delete
from minipaas.services.deployments import records
from minipaas.services.errors import Conflict, NotFound, Unavailable
from minipaas.services.job_results import DONE, FailureKind, JobResult, failure_of
from minipaas.services.polling import poll_until
from minipaas.services.retry import retry_database
from minipaas.services.state import check_action
from minipaas.worker import jobs, liveness

log = logging.getLogger(__name__)

# --- API side ------------------------------------------------------------------------------


def request_scale(*, db: Session, app_id: int, user: User | None) -> AppAction | None:
    """After the app's `replicas` changed: a scale action when the app runs, else None (a
    stopped app scales when it starts, a new deploy runs as many; one pending action or an
    unreachable queue leave it to the reconciler, which converges within one interval)."""
    try:
        return request_action(db=db, app_id=app_id, action=Action.SCALE, user=user)
    except (Conflict, Unavailable) as exc:
        db.rollback()
        log.info("app %s not scaled now: %s", app_id, exc)
        return None


def request_action(*, db: Session, app_id: int, action: Action, user: User | None) -> AppAction:
    """Records the action and queues its job; 409 if it does not fit or one is pending."""
    app = get_app(db=db, app_id=app_id)
    active = records.active_deployment(db=db, app_id=app_id)
    if active is not None:
        raise Conflict(
            f"cannot {action} while deployment {active.id} is {active.status}; wait for it to end"
        )
    check_action(action, app.status, app.container_id is not None)
    row = AppAction(app_id=app_id, action=action, requested_by_id=user.id if user else None)
    db.add(row)
    try:
        if user is not None:  # the owner's action, asked for after a delete, wins over it
            withdraw_delete(db, app_id)  # flushes the row: its conflict is caught here too
        db.commit()
    except IntegrityError:  # the partial unique index: one pending action per app
        db.rollback()
        raise _pending_conflict(db, app_id) from None
    try:
        row.job_id = jobs.enqueue_action(row.id, timeout=lifecycle.action_timeout())
    except queue.QueueUnavailable as exc:
        _end(row, JobResult(FailureKind.UNAVAILABLE, f"could not queue the action: {exc}"))
        db.commit()
        raise Unavailable(f"{exc}; nothing was changed, try again later") from None
    db.commit()
    return row


def _pending_conflict(db: Session, app_id: int) -> Conflict:
    pending = db.scalar(
        select(AppAction).where(
            AppAction.app_id == app_id, AppAction.status.in_(PENDING_ACTION_STATUSES)
        )
    )
    which = f"action {pending.id} ({pending.action}, {pending.status})" if pending else "one"
    return Conflict(
        f"another action is still pending for app {app_id}: {which}; "
        f"follow it at /apps/{app_id}/actions/{pending.id if pending else ''} and try again"
    )


async def wait_until_ended(action_id: int, seconds: float) -> bool:
    """Polls the row for up to `seconds` (the event loop, not a thread, does the waiting);
    True if the action ended meanwhile."""

    def ended() -> ActionStatus | None:
        status = _status_of(action_id)
        return None if status in PENDING_ACTION_STATUSES else status

    return await poll_until(ended, seconds) is not None


def _status_of(action_id: int) -> ActionStatus:
    with get_session() as db:
        status = db.scalar(select(AppAction.status).where(AppAction.id == action_id))
    # Deleted with its app meanwhile: as far as the caller can tell, it ended
    return status if status is not None else ActionStatus.FAILED


def raise_if_failed(row: AppAction) -> None:
    """An action that ended in failure within the wait answers as its failure's kind."""
    if row.status is ActionStatus.FAILED:
        kind = FailureKind(row.failure) if row.failure else FailureKind.INTERNAL
        JobResult(kind, row.detail or "the action failed").raise_if_failed()


def list_actions(
    *, db: Session, app_id: int, limit: int, offset: int
) -> tuple[Sequence[AppAction], int]:
    total = db.scalar(select(func.count()).where(AppAction.app_id == app_id)) or 0
    rows = db.scalars(
        select(AppAction)
        .where(AppAction.app_id == app_id)
        .order_by(AppAction.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total


def get_action(*, db: Session, app_id: int, action_id: int) -> AppAction:
    row = db.get(AppAction, action_id)
    if row is None or row.app_id != app_id:
        raise NotFound(f"action {action_id} of app {app_id} does not exist")
    return row


# --- worker side ---------------------------------------------------------------------------


def run_action(action_id: int) -> JobResult:
    """Runs the action under its app's lock and records how it ended; never raises."""
    with get_session() as db:
        row = db.get(AppAction, action_id)
        if row is None or row.status not in PENDING_ACTION_STATUSES:
            return DONE  # ended already (a repeated job) or its app was deleted
        app_id, action = row.app_id, row.action
    with app_lock(app_id):
        if not retry_database(lambda: _mark_running(action_id)):
            return DONE
        try:
            lifecycle.carry_out(app_id, action)
            result = DONE
        except Exception as exc:
            result = failure_of(exc)
        retry_database(lambda: _mark_ended(action_id, result))
    return result


def _mark_running(action_id: int) -> bool:
    with get_session() as db:
        row = db.get(AppAction, action_id, with_for_update=True)
        if row is None or row.status not in PENDING_ACTION_STATUSES:
            return False
        row.status = ActionStatus.RUNNING
        row.started_at = now()
        db.commit()
        return True


def _mark_ended(action_id: int, result: JobResult) -> None:
    with get_session() as db:
        row = db.get(AppAction, action_id)
        if row is not None:
            _end(row, result)
            db.commit()


def _end(row: AppAction, result: JobResult) -> None:
    row.status = ActionStatus.SUCCEEDED if result.ok else ActionStatus.FAILED
    row.failure = result.failure.value if result.failure is not None else None
    row.detail = result.message or None
    row.finished_at = now()


# --- reconciler side -----------------------------------------------------------------------


def requeue_lost_actions() -> list[str]:
    """Queued actions whose job Redis lost are queued again; running ones whose worker died
    end as failed (the reconciler's other steps then match the app to its container)."""
    done = []
    cutoff = datetime.now(UTC) - liveness.LIFECYCLE_JOB_GRACE
    with get_session() as db:
        pending = db.execute(
            select(AppAction.id, AppAction.app_id, AppAction.status, AppAction.job_id).where(
                AppAction.status.in_(PENDING_ACTION_STATUSES), AppAction.created_at < cutoff
            )
        ).all()
    for action_id, app_id, status, job_id in pending:
        if job_id is not None and liveness.job_in_progress(job_id):
            continue
        if status is ActionStatus.QUEUED:
            if _status_now(action_id) is not ActionStatus.QUEUED:
                continue  # a worker took it since the query above
            if job_id is not None:
                queue.delete_job(job_id)
            new_job = jobs.enqueue_action(action_id, timeout=lifecycle.action_timeout())
            with get_session() as db:
                row = db.get(AppAction, action_id)
                if row is not None:
                    row.job_id = new_job
                    db.commit()
            done.append(f"queued action {action_id} again: its job was lost")
            continue
        with try_app_lock(app_id) as free:
            if not free:
                continue  # a job works on the app: it may be this one, on a worker just born
            # Its job may have ended it since the query above (and then let go of the lock)
            ended = _end_if_pending(
                action_id,
                JobResult(
                    FailureKind.UNAVAILABLE,
                    "the worker running this action stopped before it ended; check the app "
                    "and try again",
                ),
            )
            if ended:
                done.append(f"ended action {action_id} left by a stopped worker")
    return done


def _status_now(action_id: int) -> ActionStatus | None:
    with get_session() as db:
        return db.scalar(select(AppAction.status).where(AppAction.id == action_id))


def _end_if_pending(action_id: int, result: JobResult) -> bool:
    with get_session() as db:
        row = db.get(AppAction, action_id, with_for_update=True)
        if row is None or row.status not in PENDING_ACTION_STATUSES:
            return False
        _end(row, result)
        db.commit()
        return True
