"""Registering, reading, changing and deleting apps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from minipaas import security
from minipaas.config import get_settings
from minipaas.db.models import App, PullPolicy, RunSettings, User
from minipaas.services import quotas, validation
from minipaas.services.access import readable_apps
from minipaas.services.errors import Conflict, InvalidRequest, NotFound


@dataclass
class AppSettings:
    """What a user chooses for an app; limits left out get the platform defaults."""

    image: str
    internal_port: int
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    memory_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None
    health_check_path: str = "/"
    health_check_running_seconds: int | None = None


def get_app(*, db: Session, app_id: int) -> App:
    """Unscoped: for the worker and for code behind the API's access check."""
    app = db.get(App, app_id)
    if app is None:
        raise NotFound(f"app {app_id} does not exist")
    return app


def list_apps(*, db: Session, user: User, limit: int, offset: int) -> tuple[Sequence[App], int]:
    visible = readable_apps(user)
    total = db.scalar(select(func.count()).select_from(visible.subquery())) or 0
    # The domains of the whole page in one query, not one per app
    page = visible.order_by(App.id).limit(limit).offset(offset).options(selectinload(App.domains))
    apps = db.scalars(page).all()
    return apps, total


def create_app(*, db: Session, owner: User, name: str, wanted: AppSettings) -> App:
    settings = get_settings()
    memory_mb = wanted.memory_mb or settings.default_memory_mb
    cpus = wanted.cpus or settings.default_cpus
    pids = wanted.pids or settings.default_pids
    quotas.check_image_allowed(settings, wanted.image)
    quotas.check_image_by_id(settings, wanted.image, user=owner)
    quotas.check_limits(settings, memory_mb=memory_mb, cpus=cpus, pids=pids)
    # Serialize quota checks per owner, so two concurrent creates cannot both squeeze in
    db.execute(select(User.id).where(User.id == owner.id).with_for_update())
    quotas.check_user_quota(settings, db, owner=owner, memory_mb=memory_mb, replacing=None)
    app = App(name=name, owner_id=owner.id)
    app.set_run_settings(
        RunSettings(
            image=wanted.image,
            internal_port=wanted.internal_port,
            command=wanted.command,
            env_ciphertext=security.encrypt_env(wanted.env),
            env_names=sorted(wanted.env),
            memory_mb=memory_mb,
            cpus=cpus,
            pids=pids,
            pull_policy=wanted.pull_policy,
            health_check_path=wanted.health_check_path,
            health_check_running_seconds=wanted.health_check_running_seconds,
        )
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


def update_app(*, db: Session, app: App, changes: dict[str, Any], caller: User) -> App:
    """Changes take effect on the next deploy."""
    settings = get_settings()
    if "image" in changes:
        quotas.check_image_allowed(settings, changes["image"])
        quotas.check_image_by_id(settings, changes["image"], user=caller)
    memory_mb = changes.get("memory_mb", app.memory_mb)
    quotas.check_limits(
        settings,
        memory_mb=memory_mb,
        cpus=changes.get("cpus", app.cpus),
        pids=changes.get("pids", app.pids),
    )
    owner = db.get(User, app.owner_id) if app.owner_id is not None else None
    if owner is not None and memory_mb != app.memory_mb:
        db.execute(select(User.id).where(User.id == owner.id).with_for_update())
        quotas.check_user_quota(settings, db, owner=owner, memory_mb=memory_mb, replacing=app)
    env_set = changes.pop("env_set", None)
    env_unset = changes.pop("env_unset", None)
    if env_set is not None or env_unset is not None:
        # Values are never returned, so a client changes one variable without resending all
        env = changes.pop("env", None)
        merged = dict(env) if env is not None else security.decrypt_env(app.env_ciphertext)
        merged.update(env_set or {})
        for key in env_unset or []:
            merged.pop(key, None)
        try:
            changes["env"] = validation.check_env(merged)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    for name, value in changes.items():
        if name == "env":
            app.env_ciphertext = security.encrypt_env(value)
            app.env_names = sorted(value)
        else:
            setattr(app, name, value)
    db.commit()
    return app
