"""An app as the API shows it, as plain column values: for reads that build no ORM object.

For a page of 200 apps, and for the single app a GET loads with the caller's token, building
App objects (and their domains) cost more CPU than the query. AppOut validates these rows
directly (schemas._MaskedEnvOut).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Row, func, select

from minipaas.db.models import App, AppDomain, AppReplica

# Every column but the encrypted env (never returned), the app's domains as an array, and
# the replicas past the first that run, and those of them in the route now (AppOut adds the
# first; routing.serving_endpoints says which are routed)
APP_COLUMNS: tuple[ColumnElement[Any], ...] = (
    *(column for column in App.__table__.columns if column.key != "env_ciphertext"),
    func.array(
        select(AppDomain.hostname)
        .where(AppDomain.app_id == App.id)
        .order_by(AppDomain.hostname)
        .scalar_subquery()
    ).label("domains"),
    select(func.count())
    .where(AppReplica.app_id == App.id, AppReplica.published_port.is_not(None))
    .scalar_subquery()
    .label("extra_replicas_running"),
    select(func.count())
    .where(
        AppReplica.app_id == App.id,
        AppReplica.published_port.is_not(None),
        AppReplica.unhealthy_since.is_(None),
    )
    .scalar_subquery()
    .label("extra_replicas_serving"),
)
APP_COLUMN_NAMES: tuple[str, ...] = tuple(str(column.key) for column in APP_COLUMNS)


def app_row(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    """The app's values out of a row that also holds other columns (not named as these)."""
    mapping = row._mapping
    return {name: mapping[name] for name in APP_COLUMN_NAMES}
