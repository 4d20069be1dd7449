"""Which images are the platform's: those it pulled (a ledger) and those its builds made (the
builds table). The image garbage collection trusts these rows, never an image's labels: an
image built FROM one of ours inherits its labels."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from minipaas.db.models import Build, BuildStatus, PulledImage
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


def built_here(db: Session, image_ids: Collection[str]) -> set[str]:
    """Those of `image_ids` that one of this install's builds made (the id it recorded)."""
    if not image_ids:
        return set()
    return set(db.scalars(select(Build.image_id).where(Build.image_id.in_(list(image_ids)))))


def a_build_is_running(db: Session) -> bool:
    """While the classic builder looks for a cached step it reads every sibling image, and
    fails the build ("unable to find image") if one is removed meanwhile: image removals wait
    for the install's running builds to end."""
    return (
        db.scalar(select(Build.id).where(Build.status == BuildStatus.RUNNING).limit(1)) is not None
    )


def forget(db: Session, image_ids: Collection[str]) -> None:
    """Removed from the host: nothing left to collect."""
    if image_ids:
        db.execute(delete(PulledImage).where(PulledImage.image_id.in_(list(image_ids))))
        db.commit()
