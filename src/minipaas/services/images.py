"""Which images the platform pulled: the ledger the image garbage collection trusts."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from minipaas.db.models import PulledImage
from minipaas.db.session import get_session


def record_pull(image_id: str, reference: str) -> None:
    """Called by the runtime right after it pulled an image the host did not have."""
    with get_session() as db:
        statement = insert(PulledImage).values(image_id=image_id, reference=reference)
        # Pulled again (removed meanwhile): the grace before collection starts afresh
        db.execute(
            statement.on_conflict_do_update(
                index_elements=[PulledImage.image_id],
                set_={"reference": reference, "pulled_at": func.now()},
            )
        )
        db.commit()


def pulled_before(db: Session, cutoff: datetime) -> set[str]:
    """Ids of the images pulled before `cutoff` (a pull that just happened may not have
    reached its deployment's row yet)."""
    return set(db.scalars(select(PulledImage.image_id).where(PulledImage.pulled_at < cutoff)))


def forget(db: Session, image_ids: Collection[str]) -> None:
    """Removed from the host: nothing left to collect."""
    if image_ids:
        db.execute(delete(PulledImage).where(PulledImage.image_id.in_(list(image_ids))))
        db.commit()
