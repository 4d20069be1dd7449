"""The audit log: who did what, to what, with which outcome.

A change is recorded before it runs (outcome "requested") and its outcome is filled in after
the answer: a change whose record cannot be written does not happen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from minipaas.db.models import AuditEvent
from minipaas.services.errors import Unavailable

log = logging.getLogger(__name__)

REQUESTED = "requested"


def open_event(
    *,
    connection: Connection,
    actor_id: int | None,
    actor: str,
    action: str,
    target: str,
    client_ip: str | None,
) -> int:
    """Records a change about to run; its id. Raises Unavailable when it cannot be written.

    `connection` is in autocommit (db.session.autocommit): the record is committed by its
    one statement, a round trip instead of four in a transaction of its own, and apart from
    the change's own transaction, which may still fail."""
    values = {
        "actor_id": actor_id,
        "actor": actor[:63],
        "action": action[:200],
        # A path may carry a NUL (%00), which PostgreSQL text refuses: the write would be
        # refused as "audit log cannot be written" (503) instead of its own 4xx
        "target": target.replace("\x00", "\\x00")[:500],
        "outcome": REQUESTED,
        "client_ip": client_ip,
    }
    try:
        event_id = connection.scalar(insert(AuditEvent).values(values).returning(AuditEvent.id))
    except SQLAlchemyError as exc:
        log.error("audit event not recorded, so %s %s is refused: %s", action, target, exc)
        raise Unavailable(
            "the audit log cannot be written, so nothing was done; try again shortly"
        ) from exc
    assert event_id is not None  # INSERT ... RETURNING gives the row's id
    return int(event_id)


def close_event(*, connection: Connection, event_id: int, status_code: int) -> None:
    """The HTTP outcome of a change recorded by open_event (`connection` in autocommit)."""
    outcome = "ok" if status_code < 400 else f"refused ({status_code})"
    connection.execute(
        update(AuditEvent)
        .where(AuditEvent.id == event_id, AuditEvent.outcome == REQUESTED)
        .values(outcome=outcome)
    )


def list_events(*, db: Session, limit: int, offset: int) -> tuple[Sequence[AuditEvent], int]:
    total = db.scalar(select(func.count()).select_from(AuditEvent)) or 0
    rows = db.scalars(
        select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
    ).all()
    return rows, total
