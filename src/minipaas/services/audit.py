"""The audit log: who did what, to what, with which outcome."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from minipaas.db.models import AuditEvent


def record(
    *,
    db: Session,
    actor_id: int | None,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    client_ip: str | None,
) -> None:
    db.add(
        AuditEvent(
            actor_id=actor_id,
            actor=actor[:63],
            action=action[:200],
            target=target[:500],
            outcome=outcome[:100],
            client_ip=client_ip,
        )
    )
    db.commit()


def list_events(*, db: Session, limit: int, offset: int) -> tuple[Sequence[AuditEvent], int]:
    total = db.scalar(select(func.count()).select_from(AuditEvent)) or 0
    rows = db.scalars(
        select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
    ).all()
    return rows, total
