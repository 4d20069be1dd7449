"""Per-app limits, per-user quotas and the image policy."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from minipaas.config import Settings
from minipaas.db.models import ACTIVE_DEPLOYMENT_STATUSES, App, AppReplica, Deployment, User
from minipaas.db.run_settings import RunSettingsColumns
from minipaas.services import validation
from minipaas.services.errors import FieldPath, Forbidden, InvalidRequest


def _in_body(field: str, in_body: bool) -> FieldPath:
    """The request field at fault, when the value came from the request's body."""
    return ("body", field) if in_body else ()


def check_limits(
    settings: Settings, *, memory_mb: int, cpus: float, pids: int, in_body: bool = False
) -> None:
    problems: list[tuple[FieldPath, str]] = []
    if memory_mb > settings.max_memory_mb:
        problems.append(
            (
                _in_body("memory_mb", in_body),
                f"memory_mb {memory_mb} is over the maximum of {settings.max_memory_mb}",
            )
        )
    if cpus > settings.max_cpus:
        problems.append(
            (
                _in_body("cpus", in_body),
                f"cpus {cpus:g} is over the maximum of {settings.max_cpus:g}",
            )
        )
    if pids > settings.max_pids:
        problems.append(
            (_in_body("pids", in_body), f"pids {pids} is over the maximum of {settings.max_pids}")
        )
    if problems:
        raise InvalidRequest.several(problems)


def check_replicas(settings: Settings, replicas: int, *, in_body: bool = False) -> None:
    if replicas > settings.app_max_replicas:
        raise InvalidRequest(
            f"replicas {replicas} is over the maximum of {settings.app_max_replicas} "
            "(APP_MAX_REPLICAS)",
            loc=_in_body("replicas", in_body),
        )


def check_image_allowed(settings: Settings, image: str, *, in_body: bool = False) -> None:
    patterns = settings.allowed_image_patterns
    if not any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns):
        raise InvalidRequest(
            f"image '{image}' is not allowed here: ALLOWED_IMAGES permits only "
            + ", ".join(repr(p) for p in patterns),
            loc=_in_body("image", in_body),
        )


def check_image_by_id(settings: Settings, image: str, *, user: User, in_body: bool = False) -> None:
    """A member may not name an image by id: that runs whatever image is on the host, another
    user's private pull included. Allowed only when ALLOWED_IMAGES lists an id pattern
    ("sha256:..." or a bare hex id) that matches; admins run the host and may."""
    if user.is_admin or not validation.is_image_id(image):
        return
    explicit = [
        p
        for p in settings.allowed_image_patterns
        if p.startswith("sha256:") or validation.is_image_id(p)
    ]
    if not any(fnmatch.fnmatchcase(image, pattern) for pattern in explicit):
        raise InvalidRequest(
            f"image '{image}' names an image by id, which could be any image on this host; "
            "use a repository name and tag such as 'nginx:1.27'",
            loc=_in_body("image", in_body),
        )


@dataclass(frozen=True)
class Limits:
    """What one container may use: the three resources the per-member quotas count."""

    memory_mb: int
    cpus: float
    pids: int

    @classmethod
    def of(cls, run: RunSettingsColumns) -> Limits:
        return cls(memory_mb=run.memory_mb, cpus=run.cpus, pids=run.pids)

    def most(self, other: Limits | None) -> Limits:
        """Each resource's larger value: the honest bound of either running."""
        if other is None:
            return self
        return Limits(
            memory_mb=max(self.memory_mb, other.memory_mb),
            cpus=max(self.cpus, other.cpus),
            pids=max(self.pids, other.pids),
        )

    def times(self, count: int) -> Limits:
        """What `count` containers of these limits hold together (an app's replicas)."""
        return Limits(
            memory_mb=self.memory_mb * count, cpus=self.cpus * count, pids=self.pids * count
        )

    def plus(self, other: Limits) -> Limits:
        return Limits(
            memory_mb=self.memory_mb + other.memory_mb,
            cpus=self.cpus + other.cpus,
            pids=self.pids + other.pids,
        )


NOTHING = Limits(memory_mb=0, cpus=0.0, pids=0)


@dataclass(frozen=True)
class AppUsage:
    """An app counts the most of what it is set to (the next deploy runs that), what its
    containers were deployed with (they keep those limits until replaced, stopped or not)
    and what its pending deployment will run (a rollback runs a release's, not the settings).

    Limits are per container, so a change of the replica count is counted against each of
    them: a scale up starts more containers of what runs now, not of the new settings."""

    configured: Limits
    replicas: int
    running: Limits | None = None  # the current deployment's, while its container exists
    containers: int = 0  # that exist now: each may run again without a deploy
    pending: Limits | None = None

    @property
    def counted(self) -> Limits:
        total = self.configured.times(self.replicas)
        if self.running is not None:
            total = total.most(self.running.times(max(self.containers, self.replicas)))
        if self.pending is not None:
            total = total.most(self.pending.times(self.replicas))
        return total


def check_new_app(
    settings: Settings, db: Session, *, owner: User, wanted: Limits, replicas: int
) -> None:
    """Raises 403 when one more app with these limits (per container) would pass the owner's
    quotas."""
    if owner.is_admin:
        return
    usage = _usage_by_app(db, owner)
    if len(usage) + 1 > settings.user_max_apps:
        raise Forbidden(
            f"app quota reached: {owner.username} has {len(usage)} apps and may have "
            f"{settings.user_max_apps}; delete one first"
        )
    new_app = AppUsage(configured=wanted, replicas=replicas)
    _refuse_growth(settings, owner, usage, {**usage, None: new_app})


def check_app_change(
    settings: Settings, db: Session, *, owner: User, app: App, wanted: Limits, replicas: int
) -> None:
    """Raises 403 when setting the app's limits (per container) to `wanted` and its replica
    count to `replicas` would pass the owner's quotas.

    Lowering an app's settings frees nothing until a deploy replaces its containers, and
    more replicas of a running app are more of its running containers."""
    if owner.is_admin:
        return
    _lock_app(db, app)
    usage = _usage_by_app(db, owner)
    before = usage.get(app.id, AppUsage(configured=Limits.of(app), replicas=app.replicas))
    after = replace(before, configured=wanted, replicas=replicas)
    _refuse_growth(settings, owner, usage, {**usage, app.id: after})


def check_rollback(
    settings: Settings, db: Session, *, owner: User, app: App, release: Limits
) -> None:
    """Raises 403 when running a release's limits (until the rollback ends, the app keeps
    its settings and its container) would pass the owner's quotas."""
    if owner.is_admin:
        return
    _lock_app(db, app)
    usage = _usage_by_app(db, owner)
    before = usage.get(app.id, AppUsage(configured=Limits.of(app), replicas=app.replicas))
    after = replace(before, pending=release.most(before.pending))
    _refuse_growth(settings, owner, usage, {**usage, app.id: after})


def _lock_app(db: Session, app: App) -> None:
    # Same order everywhere (app row, then owner row): a PATCH and a rollback of one app
    # wait for each other instead of deadlocking
    db.execute(select(App.id).where(App.id == app.id).with_for_update())


def _usage_by_app(db: Session, owner: User) -> dict[int | None, AppUsage]:
    """Takes the owner's row lock first: every quota check of one member (create, change,
    rollback) runs one at a time, so two requests cannot both squeeze in."""
    db.execute(select(User.id).where(User.id == owner.id).with_for_update())
    current, pending = aliased(Deployment), aliased(Deployment)
    # Containers beside the first that exist (running or not: each may run without a deploy)
    extra_containers = (
        select(func.count()).where(AppReplica.app_id == App.id).correlate(App).scalar_subquery()
    )
    rows = db.execute(
        # Columns, not objects: the values committed now, not what this session loaded
        select(
            App.id,
            *_limit_columns(App),
            *_limit_columns(current),
            *_limit_columns(pending),
            App.replicas,
            extra_containers,
        )
        # Only a container that exists can run again without a deploy (start needs none)
        .outerjoin(
            current,
            and_(current.id == App.current_deployment_id, App.container_id.is_not(None)),
        )
        # At most one per app (a partial unique index)
        .outerjoin(
            pending,
            and_(pending.app_id == App.id, pending.status.in_(ACTIVE_DEPLOYMENT_STATUSES)),
        )
        .where(App.owner_id == owner.id)
    ).all()
    usage = {}
    for row in rows:
        usage[row[0]] = AppUsage(
            configured=_limits(row[1:4]) or NOTHING,
            replicas=row[10],
            running=_limits(row[4:7]),
            containers=1 + row[11],
            pending=_limits(row[7:10]),
        )
    return usage


def _limit_columns(table: type[RunSettingsColumns]) -> tuple[Any, Any, Any]:
    return table.memory_mb, table.cpus, table.pids


def _limits(values: Sequence[Any]) -> Limits | None:
    memory_mb, cpus, pids = values
    return None if memory_mb is None else Limits(memory_mb=memory_mb, cpus=cpus, pids=pids)


def _total(usage: dict[int | None, AppUsage]) -> Limits:
    total = NOTHING
    for app_usage in usage.values():
        total = total.plus(app_usage.counted)
    return total


def _refuse_growth(
    settings: Settings,
    owner: User,
    before: dict[int | None, AppUsage],
    after: dict[int | None, AppUsage],
) -> None:
    """A change that passes a quota is refused only if it grows the total: a member over a
    quota (lowered since) can still shrink, deploy and roll back within what they hold."""
    was, will = _total(before), _total(after)
    hint = (
        "what runs counts until replaced: lower an app's settings and deploy it, remove an "
        "app's container or delete an app first"
    )
    problems = []
    if will.memory_mb > settings.user_max_memory_mb and will.memory_mb > was.memory_mb:
        problems.append(
            f"memory quota exceeded: {owner.username}'s apps would hold {will.memory_mb} MB, "
            f"the quota is {settings.user_max_memory_mb} MB"
        )
    if will.cpus > settings.user_max_cpus and will.cpus > was.cpus:
        problems.append(
            f"cpu quota exceeded: {owner.username}'s apps would hold {will.cpus:g} CPUs, "
            f"the quota is {settings.user_max_cpus:g}"
        )
    if will.pids > settings.user_max_pids and will.pids > was.pids:
        problems.append(
            f"pids quota exceeded: {owner.username}'s apps would hold {will.pids} processes, "
            f"the quota is {settings.user_max_pids}"
        )
    if problems:
        raise Forbidden("; ".join(problems) + f" ({hint})")
