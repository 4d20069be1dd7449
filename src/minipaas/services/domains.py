"""An app's own domains: host names besides <name>.<APPS_DOMAIN> that reach it.

The database decides who has a name (the unique constraint `uq_app_domains_hostname`); after
each change the app's route is published, so the router follows at once. A change the router
cannot take is undone (add) or left to the reconciler (remove), never half applied.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from minipaas.config import Settings, get_settings
from minipaas.db.models import App, AppDomain, User
from minipaas.router.control import RouteConflictError
from minipaas.router.errors import RouterError
from minipaas.router.route import normalize_host
from minipaas.services import certificates, routing
from minipaas.services.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unavailable

log = logging.getLogger(__name__)

# Well under the router's 64 hosts per route (router/route.py MAX_HOSTS), with the app's own
MAX_DOMAINS_PER_APP = 20


def domain_url(hostname: str) -> str:
    """Where the app answers at this domain (through the router's port)."""
    port = get_settings().router_port
    return f"http://{hostname}{'' if port == 80 else f':{port}'}/"


def list_domains(
    *, db: Session, app: App, limit: int = 500, offset: int = 0
) -> tuple[Sequence[AppDomain], int]:
    """The app's domains by name, and how many it has."""
    mine = select(AppDomain).where(AppDomain.app_id == app.id)
    total = db.scalar(select(func.count()).select_from(mine.subquery())) or 0
    rows = db.scalars(mine.order_by(AppDomain.hostname).limit(limit).offset(offset)).all()
    return rows, total


def add_domain(*, db: Session, app: App, hostname: str, user: User) -> AppDomain:
    """Gives the app one more host name and makes the router serve it."""
    settings = get_settings()
    name = check_hostname(settings, db=db, app=app, hostname=hostname, user=user)
    _lock_app_with_room(db, app)
    domain = AppDomain(app_id=app.id, hostname=name)
    db.add(domain)
    try:
        db.commit()
    except IntegrityError as exc:
        db.rollback()
        if "uq_app_domains_hostname" not in str(exc.orig):
            raise
        raise _taken(db, app, name) from None
    _publish_or_undo(db, app, domain)
    return domain


def remove_domain(*, db: Session, app: App, hostname: str) -> None:
    """Takes a host name from the app; the router stops serving it for the app."""
    try:
        name = normalize_host(hostname)
    except ValueError:
        # Not a host name at all (it may hold characters PostgreSQL refuses): none of the app's
        raise NotFound(
            f"app {app.name} has no domain {hostname[:253]!r}; GET /apps/{app.id}/domains "
            "lists them"
        ) from None
    removed = db.execute(
        delete(AppDomain)
        .where(AppDomain.app_id == app.id, AppDomain.hostname == name)
        .returning(AppDomain.id)
    ).first()
    if removed is None:
        db.rollback()
        raise NotFound(
            f"app {app.name} has no domain {name[:253]!r}; GET /apps/{app.id}/domains lists them"
        )
    db.commit()
    # Its certificate is no longer served (kept in the database if the name comes back)
    certificates.publish_tls_best_effort()
    try:
        routing.publish_app_route(app.id)
    except (RouterError, OSError, ValueError) as exc:
        # The database is the truth and the user's intent is kept: the reconciler rewrites
        # the router's table from it once the router answers again (restoring the row would
        # not fix the router either, and would take back a change the user asked for)
        log.error("route of app %s not republished after removing %s: %s", app.id, name, exc)
        raise Unavailable(
            f"domain {name!r} is removed, but the router could not be updated now ({exc}); "
            f"it may answer for {name!r} until the reconciler rewrites the routes "
            f"(every {get_settings().reconcile_interval_seconds:g} s once the router is up)"
        ) from None


def check_hostname(settings: Settings, *, db: Session, app: App, hostname: str, user: User) -> str:
    """The normalized name if this user may give it to this app; raises 422, 403 or 409."""
    try:
        name = normalize_host(hostname)
    except ValueError as exc:
        raise InvalidRequest(
            f"{exc}; give a DNS name such as 'www.example.com'", loc=("body", "hostname")
        ) from None
    _check_not_platform(settings, name)
    _check_apps_domain(settings, db=db, app=app, name=name)
    if not user.is_admin:
        _check_allowed(settings, name)
    return name


def allowed_domain_patterns(settings: Settings) -> list[str]:
    return [p.strip().lower() for p in settings.allowed_domains.split(",") if p.strip()]


def _check_not_platform(settings: Settings, name: str) -> None:
    platform = settings.platform_host
    if name == platform or name.endswith(f".{platform}"):
        raise Forbidden(
            f"{name!r} is the platform's own host (PLATFORM_HOST {platform!r}) or under it, "
            "where the API and dashboard live; choose a name outside it"
        )


def _check_apps_domain(settings: Settings, *, db: Session, app: App, name: str) -> None:
    """Names under APPS_DOMAIN are the apps' automatic hosts, handed out by app name only."""
    apps_domain = settings.apps_domain
    own = f"{app.name}.{apps_domain}"
    if name == own:
        raise Conflict(f"{name!r} is already app {app.name}'s own host; it needs no domain entry")
    if name == apps_domain:
        raise Forbidden(f"{name!r} is the apps domain (APPS_DOMAIN) itself; no app may have it")
    if not name.endswith(f".{apps_domain}"):
        return
    label = name.removesuffix(f".{apps_domain}")
    if "." not in label and db.scalar(select(App.id).where(App.name == label)) is not None:
        raise Conflict(f"{name!r} is the host of another app; choose a name outside {apps_domain}")
    raise Forbidden(
        f"{name!r} is under the apps domain {apps_domain!r}, whose names belong to apps by "
        f"their name (this app's is {own!r}); choose a name outside it"
    )


def _check_allowed(settings: Settings, name: str) -> None:
    patterns = allowed_domain_patterns(settings)
    if not patterns:
        raise Forbidden("members may not add domains here (ALLOWED_DOMAINS is empty); ask an admin")
    if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
        raise Forbidden(
            f"domain {name!r} is not allowed here: ALLOWED_DOMAINS permits members only "
            + ", ".join(repr(p) for p in patterns)
            + "; choose a matching name or ask an admin"
        )


def _lock_app_with_room(db: Session, app: App) -> None:
    """Holds the app's row until commit, so concurrent adds cannot pass the cap together."""
    if db.scalar(select(App.id).where(App.id == app.id).with_for_update()) is None:
        raise NotFound(f"app {app.id} does not exist")
    count = db.scalar(select(func.count()).where(AppDomain.app_id == app.id)) or 0
    if count >= MAX_DOMAINS_PER_APP:
        db.rollback()
        raise Conflict(
            f"app {app.name} has {count} domains, the most an app may have; remove one first"
        )


def _taken(db: Session, app: App, name: str) -> Conflict:
    holder = db.scalar(select(AppDomain.app_id).where(AppDomain.hostname == name))
    if holder == app.id:
        return Conflict(f"{name!r} is already a domain of app {app.name}")
    return Conflict(
        f"{name!r} is already a domain of another app; a name reaches one app only, "
        "so remove it there first"
    )


def _publish_or_undo(db: Session, app: App, domain: AppDomain) -> None:
    """Publishes the app's route; if the router refuses, the domain is deleted again."""
    try:
        routing.publish_app_route(app.id)
    except RouteConflictError as exc:
        _undo(db, app, domain)
        raise Conflict(
            f"the router still serves {domain.hostname!r} for another app ({exc}); nothing was "
            "changed: try again once the reconciler has caught up"
        ) from None
    except (RouterError, OSError) as exc:
        _undo(db, app, domain)
        raise Unavailable(
            f"the router could not be updated ({exc}); nothing was changed, try again shortly"
        ) from None
    except ValueError as exc:
        # A route the router refuses would break every later publish of this app (deploys)
        _undo(db, app, domain)
        raise InvalidRequest(
            f"the router refuses {domain.hostname!r}: {exc}", loc=("body", "hostname")
        ) from None


def _undo(db: Session, app: App, domain: AppDomain) -> None:
    db.execute(delete(AppDomain).where(AppDomain.id == domain.id))
    db.commit()
    # The failed publish may have gone half way (live in nginx, not saved): follow the database
    routing.publish_app_route_best_effort(app.id)
