"""Registering, reading, changing and deleting apps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session, joinedload, selectinload

from minipaas import security
from minipaas.config import Settings, get_settings
from minipaas.db.driver_reads import DriverRead
from minipaas.db.models import App, PullPolicy, RunSettings, User
from minipaas.router.route import is_platform_host
from minipaas.services import certificates, quotas, validation
from minipaas.services.access import apps_visible_to, readable_apps
from minipaas.services.app_rows import APP_COLUMNS
from minipaas.services.builds import naming
from minipaas.services.errors import Conflict, InvalidRequest, NotFound, Unavailable


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
    replicas: int = 1


def get_app(*, db: Session, app_id: int) -> App:
    """Unscoped: for the worker and for code behind the API's access check."""
    app = db.get(App, app_id)
    if app is None:
        raise NotFound(f"app {app_id} does not exist")
    return app


def get_visible_app(*, db: Session, user: User, app_id: int) -> App:
    """As access.app_for (404 when hidden), with the app's domains loaded by the same query."""
    statement = (
        readable_apps(user)
        .where(App.id == app_id)
        .options(joinedload(App.domains), selectinload(App.extra_replicas))
    )
    app = db.scalars(statement).unique().first()
    if app is None:
        raise NotFound(f"app {app_id} does not exist")
    return app


# A page row: the app's columns and last the number of visible apps (a window over the same
# scan: no second query)
_PAGE_COLUMNS = (*APP_COLUMNS, func.count().over().label("total"))


@dataclass(frozen=True)
class _PageStatements:
    page: DriverRead
    total: Select[Any]


@lru_cache(maxsize=2)
def _page_statements(is_admin: bool) -> _PageStatements:
    """Built once per role, with the caller, limit and offset as parameters: building the
    statement and its cache key on every request took ~7% of a page of 200's CPU."""
    visible = apps_visible_to(bindparam("user_id"), is_admin=is_admin)
    page = visible.with_only_columns(*_PAGE_COLUMNS).order_by(App.id)
    return _PageStatements(
        page=DriverRead(page.limit(bindparam("limit")).offset(bindparam("offset"))),
        total=select(func.count()).select_from(visible.subquery()),
    )


async def list_apps(
    connection: AsyncConnection, *, user_id: int, is_admin: bool, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of the apps the user may see, as column values by name (no ORM objects: for
    200 apps building them took longer than the query), and their total. On the event loop
    (db.session.async_read_engine), on the driver's cursor: no ORM, no Rows; status and
    pull_policy as the strings stored (equal to their enum members, dumped the same)."""
    statements = _page_statements(is_admin)
    params = {"user_id": user_id, "limit": limit, "offset": offset}
    rows = await statements.page.raw_async(connection, params)
    names = statements.page.names[:-1]  # all but the last column, the total
    if rows:
        return [dict(zip(names, row, strict=False)) for row in rows], rows[0][-1]
    # Past the end (or nothing visible): no row carried the total
    return [], await connection.scalar(statements.total, params) or 0


def _check_host_is_not_the_platforms(settings: Settings, name: str) -> None:
    """The app's own host, <name>.<APPS_DOMAIN>, may not be PLATFORM_HOST or under it (with
    APPS_DOMAIN=example.com and PLATFORM_HOST=paas.example.com, the app "paas"): the router
    refuses such a route, so the app could never be served."""
    host = f"{name}.{settings.apps_domain}"
    if is_platform_host(host, settings.platform_host):
        raise InvalidRequest(
            f"name '{name}' would give the app the host {host}, which is the platform's "
            "(PLATFORM_HOST); choose another name",
            loc=("body", "name"),
        )


def check_image_rules(settings: Settings, image: str, *, user: User, app_id: int | None) -> None:
    """422 unless `user` may run `image` in this app (`app_id`; None for a new app):
    ALLOWED_IMAGES, no image by id, no other app's build. Before the engine is asked whether
    the image is here, else a refused reference would still tell a member what the host has."""
    if app_id is not None and naming.is_own_build_image(settings, app_id, image):
        return
    quotas.check_image_allowed(settings, image, in_body=True)
    quotas.check_image_by_id(settings, image, user=user, in_body=True)
    naming.check_not_a_build(settings, image, app_id=app_id, user=user)


def create_app(*, db: Session, owner: User, name: str, wanted: AppSettings) -> App:
    settings = get_settings()
    _check_host_is_not_the_platforms(settings, name)
    memory_mb = wanted.memory_mb or settings.default_memory_mb
    cpus = wanted.cpus or settings.default_cpus
    pids = wanted.pids or settings.default_pids
    check_image_rules(settings, wanted.image, user=owner, app_id=None)
    quotas.check_limits(settings, memory_mb=memory_mb, cpus=cpus, pids=pids, in_body=True)
    quotas.check_replicas(settings, wanted.replicas, in_body=True)
    # Holds the owner's row lock until the commit: quota checks of one member run one at a time
    wanted_limits = quotas.Limits(memory_mb=memory_mb, cpus=cpus, pids=pids)
    quotas.check_new_app(settings, db, owner=owner, wanted=wanted_limits, replicas=wanted.replicas)
    app = App(name=name, owner_id=owner.id, replicas=wanted.replicas)
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


# How long a PATCH waits for the app's row: the healer holds it across a Docker call, which
# a hung engine can make last a minute
_ROW_LOCK_WAIT = "5s"


def _lock_and_reload(db: Session, app: App) -> None:
    db.execute(text(f"SET LOCAL lock_timeout = '{_ROW_LOCK_WAIT}'"))
    try:
        db.scalar(
            select(App)
            .where(App.id == app.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        db.rollback()
        raise Unavailable(
            f"app {app.id} is busy (the platform is repairing or changing it); "
            "nothing was changed, try again in a few seconds"
        ) from None
    db.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


_LOCK_NOT_AVAILABLE = "55P03"


def update_app(*, db: Session, app: App, changes: dict[str, Any], caller: User) -> App:
    """Changes take effect on the next deploy."""
    settings = get_settings()
    if "image" in changes:
        check_image_rules(settings, changes["image"], user=caller, app_id=app.id)
    # What the app holds now, under its lock: a concurrent PATCH committed since this request
    # loaded the app counts (its limits against the quota, its env_set merged with this one's)
    _lock_and_reload(db, app)
    limits = quotas.Limits(
        memory_mb=changes.get("memory_mb", app.memory_mb),
        cpus=changes.get("cpus", app.cpus),
        pids=changes.get("pids", app.pids),
    )
    quotas.check_limits(
        settings,
        memory_mb=limits.memory_mb,
        cpus=limits.cpus,
        pids=limits.pids,
        in_body=True,
    )
    replicas = changes.get("replicas", app.replicas)
    quotas.check_replicas(settings, replicas, in_body=True)
    owner = db.get(User, app.owner_id) if app.owner_id is not None else None
    if owner is not None and (limits != quotas.Limits.of(app) or replicas != app.replicas):
        quotas.check_app_change(
            settings, db, owner=owner, app=app, wanted=limits, replicas=replicas
        )
    tls_changed = bool({"https_redirect", "hsts_max_age"} & changes.keys())
    if changes.get("https_redirect") and not settings.router_tls_port:
        raise InvalidRequest(
            "this platform serves no HTTPS (ROUTER_TLS_PORT is 0), so HTTP cannot be "
            "redirected to it; leave https_redirect out",
            loc=("body", "https_redirect"),
        )
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
            raise InvalidRequest(str(exc), loc=("body", "env_set")) from None
    for name, value in changes.items():
        if name == "env":
            app.env_ciphertext = security.encrypt_env(value)
            app.env_names = sorted(value)
        else:
            setattr(app, name, value)
    db.commit()
    if tls_changed:
        # Redirect and HSTS are the router's at once, like a domain (no deploy needed)
        certificates.publish_tls_best_effort()
    return app


def ask_for_delete(db: Session, app_id: int, at: datetime) -> bool:
    """Records that the app's deletion was asked for (committed before its job is queued);
    False if it was already (the first request's time is kept)."""
    asked = db.execute(
        update(App)
        .where(App.id == app_id, App.delete_requested_at.is_(None))
        .values(delete_requested_at=at)
    )
    db.commit()
    return bool(asked.rowcount)  # type: ignore[attr-defined]


def withdraw_delete(db: Session, app_id: int, asked: datetime | None = None) -> None:
    """The app's deletion is no longer asked for: its job failed (its result says why), or
    the owner asked for something else since (a deploy, an action), which wins. With `asked`,
    only that request. Committed by the caller."""
    statement = (
        update(App)
        .where(App.id == app_id, App.delete_requested_at.is_not(None))
        .values(delete_requested_at=None)
    )
    if asked is not None:
        statement = statement.where(App.delete_requested_at == asked)
    db.execute(statement)
