"""Who may see which app: the one place every app query is scoped."""

from __future__ import annotations

from sqlalchemy import BindParameter, Select, select
from sqlalchemy.orm import Session

from minipaas.db.models import App, User
from minipaas.services.errors import NotFound


def readable_apps(user: User) -> Select[App]:
    """Admins see every app; members only their own."""
    return apps_visible_to(user.id, is_admin=user.is_admin)


def apps_visible_to(user_id: int | BindParameter[int], *, is_admin: bool) -> Select[App]:
    """readable_apps, for a caller known by id and role (a checked token, no User object);
    the id may be a parameter, for a statement built once and run for many callers."""
    statement = select(App)
    if not is_admin:
        statement = statement.where(App.owner_id == user_id)
    return statement


def app_for(*, db: Session, user: User, app_id: int) -> App:
    """The app if this user may act on it; otherwise 404, exactly as if it did not exist."""
    app = db.scalar(readable_apps(user).where(App.id == app_id))
    if app is None:
        raise NotFound(f"app {app_id} does not exist")
    return app
