"""Per-app limits, per-user quotas and the image policy."""

from __future__ import annotations

import fnmatch

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from minipaas.config import Settings
from minipaas.db.models import App, User
from minipaas.services import validation
from minipaas.services.errors import Forbidden, InvalidRequest


def check_limits(settings: Settings, *, memory_mb: int, cpus: float, pids: int) -> None:
    problems = []
    if memory_mb > settings.max_memory_mb:
        problems.append(f"memory_mb {memory_mb} is over the maximum of {settings.max_memory_mb}")
    if cpus > settings.max_cpus:
        problems.append(f"cpus {cpus:g} is over the maximum of {settings.max_cpus:g}")
    if pids > settings.max_pids:
        problems.append(f"pids {pids} is over the maximum of {settings.max_pids}")
    if problems:
        raise InvalidRequest("; ".join(problems))


def check_image_allowed(settings: Settings, image: str) -> None:
    patterns = settings.allowed_image_patterns
    if not any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns):
        raise InvalidRequest(
            f"image '{image}' is not allowed here: ALLOWED_IMAGES permits only "
            + ", ".join(repr(p) for p in patterns)
        )


def check_image_by_id(settings: Settings, image: str, *, user: User) -> None:
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
            "use a repository name and tag such as 'nginx:1.27'"
        )


def check_user_quota(
    settings: Settings, db: Session, *, owner: User, memory_mb: int, replacing: App | None
) -> None:
    """Raises 403 when the owner would pass their number of apps or total memory.

    Admins run the platform and are not held to the per-user quotas (per-app limits still hold).
    """
    if owner.is_admin:
        return
    others = select(App).where(App.owner_id == owner.id)
    if replacing is not None:
        others = others.where(App.id != replacing.id)
    count = db.scalar(select(func.count()).select_from(others.subquery())) or 0
    used = db.scalar(select(func.coalesce(func.sum(others.subquery().c.memory_mb), 0))) or 0
    if replacing is None and count + 1 > settings.user_max_apps:
        raise Forbidden(
            f"app quota reached: {owner.username} has {count} apps and may have "
            f"{settings.user_max_apps}; delete one first"
        )
    if used + memory_mb > settings.user_max_memory_mb:
        raise Forbidden(
            f"memory quota exceeded: {owner.username}'s apps would use {used + memory_mb} MB, "
            f"the quota is {settings.user_max_memory_mb} MB ({used} MB used by other apps)"
        )
