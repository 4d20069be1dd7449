"""An app as the API shows it, as plain column values: for reads that build no ORM object.

For a page of 200 apps, and for the single app a GET loads with the caller's token, building
App objects (and their domains) cost more CPU than the query. AppOut validates these rows
directly (schemas._MaskedEnvOut).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, func, select

from minipaas.db.models import App, AppDomain, AppReplica

# Columns an answer never shows: the encrypted env (never returned), and the platform's own
# bookkeeping (fewer columns: a page of 200 is fetched and serialized faster)
_NOT_SHOWN = frozenset({"env_ciphertext", "container_id", "crash_streak", "last_restart_at"})
# The other columns, the app's domains as an array, and the endpoints of its replicas past
# the first (AppOut counts those in rotation with the same rule as the router:
# routing.serving_endpoints_of)
_REPLICAS = AppReplica.__table__
APP_COLUMNS: tuple[ColumnElement[Any], ...] = (
    *(column for column in App.__table__.columns if column.key not in _NOT_SHOWN),
    func.array(
        select(AppDomain.hostname)
        .where(AppDomain.app_id == App.id)
        .order_by(AppDomain.hostname)
        .scalar_subquery()
    ).label("domains"),
    func.array(
        select(
            func.json_build_array(
                _REPLICAS.c.published_address,
                _REPLICAS.c.published_port,
                _REPLICAS.c.unhealthy_since.is_not(None),
            )
        )
        .where(_REPLICAS.c.app_id == App.id, _REPLICAS.c.published_port.is_not(None))
        .order_by(_REPLICAS.c.replica)
        .scalar_subquery()
    ).label("extra_replicas"),
)
APP_COLUMN_NAMES: tuple[str, ...] = tuple(str(column.key) for column in APP_COLUMNS)


def app_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The app's values out of a row that also holds other columns (not named as these)."""
    return {name: row[name] for name in APP_COLUMN_NAMES}


class EndpointValues(NamedTuple):
    """A replica's endpoint as app_rows reads it (routing.ReplicaRow)."""

    published_address: str | None
    published_port: int | None
    unhealthy_since: object  # only whether it is None matters


def replica_rows(row: dict[str, Any], extra_replicas: list[Any] | None) -> list[EndpointValues]:
    """The app's replicas, the first one first, from a row of APP_COLUMNS and its
    "extra_replicas" column."""
    first = EndpointValues(row["published_address"], row["published_port"], row["unhealthy_since"])
    extras = [
        EndpointValues(address, port, True if unhealthy else None)
        for address, port, unhealthy in extra_replicas or ()
    ]
    return [first, *extras]
