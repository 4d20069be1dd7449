"""Where a replica answers, as the app and replica rows keep it (port + node address)."""

from __future__ import annotations

from typing import Protocol

from minipaas.db.models import App, AppReplica
from minipaas.runtime.base import LOOPBACK, Endpoint


class ReplicaRow(Protocol):
    """What the router reads of a replica: App (the first replica), AppReplica, or a row of
    plain values (app_rows)."""

    @property
    def published_port(self) -> int | None: ...
    @property
    def published_address(self) -> str | None: ...
    @property
    def unhealthy_since(self) -> object: ...


def endpoint_of(row: ReplicaRow) -> Endpoint | None:
    """The replica's endpoint, or None while it has no port (down); a NULL address is the
    host's loopback (rows from before node addresses)."""
    if row.published_port is None:
        return None
    return Endpoint(row.published_address or LOOPBACK, row.published_port)


def set_endpoint(row: App | AppReplica, endpoint: Endpoint | None) -> None:
    """Port and address change together: a port without its node would be probed and routed
    on the wrong host."""
    row.published_port = endpoint.port if endpoint else None
    row.published_address = endpoint.address if endpoint else None
