"""The API's hottest reads, executed on the driver's cursor: written in Core, run without
SQLAlchemy's per-execute layer.

A token with its app (every GET of one app) and a page of apps (every list) are the same
few statements thousands of times a second. SQLAlchemy's work around each execute (its
execution context, result metadata built from the cursor's description, a Row per row) cost
more CPU than the driver's own: 118 against 40 us for the token+app lookup, 1.34 against
1.04 ms for a page of 200 apps, measured in one process on this project's 2-core machine. Here
the statement is compiled once, its parameters bound as SQLAlchemy would bind them, and the rows
come back as the driver loads them, with enum columns turned into their enum members as
SQLAlchemy's result processing does: the caller sees the same values either way
(tests/integration/test_driver_reads.py compares them).

Errors and events are SQLAlchemy's: a driver error becomes the same sqlalchemy.exc class (the API
answers 503 for a database that went away), and a lost connection is invalidated so the pool
does not hand it out again; before_cursor_execute listeners see the statement.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import psycopg
from sqlalchemy import Connection, Enum, Select
from sqlalchemy.engine import Compiled
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from minipaas.db.session import renew_pools_after_disconnect

Row = tuple[Any, ...]


class DriverRead:
    """One SELECT, compiled for the connection's dialect at its first use."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self.names: tuple[str, ...] = tuple(statement.selected_columns.keys())
        # Enum columns: the stored value -> the member, as SQLAlchemy's Enum type returns it
        self._members: list[tuple[int, Mapping[str, enum.Enum]]] = [
            (index, {str(member.value): member for member in column.type.enum_class})
            for index, column in enumerate(statement.selected_columns)
            if isinstance(column.type, Enum) and column.type.enum_class is not None
        ]
        self._compiled: tuple[str, Compiled] | None = None

    async def all_async(self, connection: AsyncConnection, params: Mapping[str, Any]) -> list[Row]:
        """all() on the event loop (db.session.async_read_engine)."""
        return self._converted(await self.raw_async(connection, params))

    async def raw_async(self, connection: AsyncConnection, params: Mapping[str, Any]) -> list[Row]:
        """all_async() with enum columns left as the strings stored, which equal their StrEnum
        members: for a caller that only compares and dumps them (a page of 200 apps spent ~4%
        of its CPU turning two columns a row into members)."""
        sync = connection.sync_connection
        assert sync is not None  # started: `async with engine.connect()`
        # Checked out already: its driver connection, with no greenlet switch for it
        fairy = sync.connection if not sync.invalidated else await connection.get_raw_connection()
        sql, values = self._bound(sync, params)
        driver: psycopg.AsyncConnection[Row] = fairy.driver_connection  # type: ignore[assignment]
        try:
            async with driver.cursor() as cursor:
                _announce(sync, cursor, sql, values)
                await cursor.execute(sql, values)
                rows = await cursor.fetchall()
        except psycopg.Error as exc:
            lost = _lost(sync, exc, fairy)
            if lost:
                await connection.invalidate(exc)
            raise _sqlalchemy_error(sync, exc, sql, values, lost) from exc
        except BaseException:
            # Interrupted mid-statement (a cancelled request): its state is unknown, so the
            # connection does not go back to the pool (as SQLAlchemy's execute does)
            with suppress(Exception):
                await connection.invalidate()
            raise
        return rows

    async def first_async(
        self, connection: AsyncConnection, params: Mapping[str, Any]
    ) -> Row | None:
        rows = await self.all_async(connection, params)
        return rows[0] if rows else None

    def first(self, connection: Connection, params: Mapping[str, Any]) -> Row | None:
        rows = self.all(connection, params)
        return rows[0] if rows else None

    def all(self, connection: Connection, params: Mapping[str, Any]) -> list[Row]:
        sql, values = self._bound(connection, params)
        fairy = connection.connection
        driver: psycopg.Connection[Row] = fairy.driver_connection  # type: ignore[assignment]
        try:
            with driver.cursor() as cursor:
                _announce(connection, cursor, sql, values)
                cursor.execute(sql, values)
                rows = cursor.fetchall()
        except psycopg.Error as exc:
            lost = _lost(connection, exc, fairy)
            if lost:
                connection.invalidate(exc)
            raise _sqlalchemy_error(connection, exc, sql, values, lost) from exc
        except BaseException:
            with suppress(Exception):
                connection.invalidate()  # interrupted mid-statement: as in all_async
            raise
        return self._converted(rows)

    def _bound(
        self, connection: Connection, params: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The SQL and its parameters as SQLAlchemy would bind them (enums by value)."""
        sql, compiled = self._compile(connection)
        values = {
            name: value.value if isinstance(value, enum.Enum) else value
            for name, value in (compiled.construct_params(dict(params)) or {}).items()
        }
        return sql, values

    def _converted(self, rows: list[Row]) -> list[Row]:
        return [self._with_members(row) for row in rows] if self._members else rows

    def _with_members(self, row: Row) -> Row:
        values = list(row)
        for index, members in self._members:
            if values[index] is not None:
                values[index] = members[values[index]]
        return tuple(values)

    def _compile(self, connection: Connection) -> tuple[str, Compiled]:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=connection.dialect)
            self._compiled = (str(compiled), compiled)
        return self._compiled


def _announce(connection: Connection, cursor: Any, sql: str, values: dict[str, Any]) -> None:
    """Listeners (echo, tests counting statements) still see the statement go out; with no
    execution context (None): a listener that needs one (some tracing libraries) would fail."""
    connection.dispatch.before_cursor_execute(connection, cursor, sql, values, None, False)


def _lost(connection: Connection, exc: psycopg.Error, fairy: Any) -> bool:
    """Whether the server is gone; if so, every connection the pool opened before now is
    replaced at its next checkout (as SQLAlchemy's execute does: a restarted PostgreSQL costs
    one error per pool, not one per pooled connection). The caller invalidates this one."""
    lost = bool(connection.dialect.is_disconnect(exc, fairy.dbapi_connection, None))  # type: ignore[arg-type]
    if lost:
        connection.engine.pool._invalidate(fairy, exc, _checkin=False)
        # ... and the process's other pools (the API's first query of a request is here)
        renew_pools_after_disconnect(float(fairy._connection_record.starttime))
    return lost


def _sqlalchemy_error(
    connection: Connection, exc: psycopg.Error, sql: str, values: dict[str, Any], lost: bool
) -> BaseException:
    """The sqlalchemy.exc class SQLAlchemy's own execute would raise (OperationalError...)."""
    return DBAPIError.instance(
        sql, values, exc, psycopg.Error, connection_invalidated=lost, dialect=connection.dialect
    )
