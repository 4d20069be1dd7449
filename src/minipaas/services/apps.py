"""Registering, reading, changing and deleting apps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipaas.db.models import App, PullPolicy
from minipaas.services.errors import Conflict, NotFound


def get_app(*, db: Session, app_id: int) -> App:
    app = db.get(App, app_id)
    if app is None:
        raise NotFound(f"app {app_id} does not exist")
    return app


def list_apps(*, db: Session, limit: int, offset: int) -> tuple[Sequence[App], int]:
    total = db.scalar(select(func.count()).select_from(App)) or 0
    apps = db.scalars(select(App).order_by(App.id).limit(limit).offset(offset)).all()
    return apps, total


def create_app(
    *,
    db: Session,
    name: str,
    image: str,
    internal_port: int,
    env: dict[str, str],
    command: list[str] | None,
    pull_policy: PullPolicy,
) -> App:
    app = App(
        name=name,
        image=image,
        internal_port=internal_port,
        env=env,
        command=command,
        pull_policy=pull_policy,
    )
    db.add(app)
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        # The unique constraint decides, so two concurrent requests cannot both win
        if "uq_apps_name" in str(exc.orig):
            raise Conflict(f"an app named '{name}' already exists; choose another name") from None
        raise
    return app


def update_app(*, db: Session, app_id: int, changes: dict[str, Any]) -> App:
    """Changes take effect on the next deploy."""
    app = get_app(db=db, app_id=app_id)
    for field, value in changes.items():
        setattr(app, field, value)
    db.commit()
    return app
