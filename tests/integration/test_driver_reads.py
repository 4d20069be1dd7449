"""The hot reads run on the driver's cursor (db.driver_reads), in a worker thread and on the
event loop, return exactly what the same Core statements return through SQLAlchemy, value for
value and type for type, and a database that goes away mid-read is SQLAlchemy's error, with
the lost connection out of the pool."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from minipaas import security
from minipaas.db.driver_reads import DriverRead
from minipaas.db.models import AppStatus, PullPolicy, UserRole
from minipaas.db.session import async_read_engine, close_async_read_engine, read_engine
from minipaas.services import apps, users
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import Member, new_member

pytestmark = [pytest.mark.docker]


def _create(api: httpx.Client, member: Member, name: str, **extra: object) -> int:
    body = {"name": name, "image": HELLO_V1, "internal_port": 80, **extra}
    created = api.post("/apps", json=body, headers=member.headers)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def _same_rows(connection: Connection, read: DriverRead, params: dict[str, Any]) -> list[Any]:
    """The rows on the driver, in a worker thread and on the event loop, equal Core's."""
    through_core = [tuple(row) for row in connection.execute(read.statement, params).all()]
    on_the_driver = read.all(connection, params)
    on_the_loop = asyncio.run(_on_the_loop(read, params))
    for rows in (on_the_driver, on_the_loop):
        assert rows == through_core
        for core_row, driver_row in zip(through_core, rows, strict=True):
            types = [type(value) for value in driver_row]
            assert types == [type(value) for value in core_row], read.names
    return on_the_driver


async def _on_the_loop(
    read: DriverRead, params: dict[str, Any], *, members: bool = True
) -> list[Any]:
    try:
        async with async_read_engine().connect() as connection:
            if members:
                return await read.all_async(connection, params)
            return await read.raw_async(connection, params)
    finally:
        await close_async_read_engine()


def test_driver_rows_equal_core_rows(stack: Stack, api: httpx.Client, app_name: str) -> None:
    member, stranger = new_member(api), new_member(api)
    rich = _create(
        api,
        member,
        f"{app_name}-a",
        env={"SECRET": "value"},
        command=["httpd", "-f", "-p", "80"],
        pull_policy="never",
        replicas=2,
    )
    added = api.post(f"/apps/{rich}/domains", json={"hostname": f"{app_name}.example.test"})
    assert added.status_code == 201, added.text
    _create(api, member, f"{app_name}-b")
    hidden = _create(api, stranger, f"{app_name}-c")
    with read_engine().connect() as connection:
        for token, app_id in (
            (member.token, rich),
            (member.token, hidden),  # not theirs: the app's columns are NULL
            (stack.env["ADMIN_TOKEN"], hidden),
        ):
            digest = security.token_hash(token)
            [row] = _same_rows(
                connection, users._TOKEN_AND_APP_READ, {"digest": digest, "app_id": app_id}
            )
            [alone] = _same_rows(connection, users._TOKEN_READ, {"digest": digest})
            named = dict(zip(users._TOKEN_AND_APP_READ.names, row, strict=True))
            assert isinstance(named["user_role"], UserRole)
            assert alone == row[: len(alone)]
        for is_admin, user_id in ((False, member.id), (True, member.id)):
            page = apps._page_statements(is_admin).page
            params = {"user_id": user_id, "limit": 500, "offset": 0}
            rows = [
                dict(zip(page.names, row, strict=True))
                for row in _same_rows(connection, page, params)
            ]
            mine = next(row for row in rows if row["id"] == rich)
            assert mine["status"] is AppStatus.CREATED
            assert mine["pull_policy"] is PullPolicy.NEVER
            assert mine["domains"] == [f"{app_name}.example.test"]
            assert mine["env_names"] == ["SECRET"]
            assert (hidden in {row["id"] for row in rows}) is is_admin
            # The list's read: the same values, its enum columns as the strings stored
            raw = asyncio.run(_on_the_loop(page, params, members=False))
            assert raw == [tuple(row.values()) for row in rows]
            raw_mine = next(
                dict(zip(page.names, row, strict=True)) for row in raw if row[0] == rich
            )
            assert type(raw_mine["status"]) is str and raw_mine["status"] == "created"
            assert type(raw_mine["pull_policy"]) is str and raw_mine["pull_policy"] == "never"


def test_a_lost_connection_is_sqlalchemys_error_and_leaves_the_pool(stack: Stack) -> None:
    digest = security.token_hash(stack.env["ADMIN_TOKEN"])
    with read_engine().connect() as victim:
        assert users._TOKEN_READ.first(victim, {"digest": digest}) is not None
        backend = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with read_engine().connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(OperationalError):  # the API's 503, not a 500
            users._TOKEN_READ.first(victim, {"digest": digest})
        assert victim.invalidated
    with read_engine().connect() as fresh:  # the pool hands out a working connection
        assert users._TOKEN_READ.first(fresh, {"digest": digest}) is not None
    asyncio.run(_lost_on_the_loop(digest))


def test_a_lost_server_retires_the_whole_pool_not_one_connection(stack: Stack) -> None:
    """A restarted PostgreSQL ends every pooled connection: after the first one meets it, the
    others are replaced at their next checkout instead of each failing a request."""
    digest = security.token_hash(stack.env["ADMIN_TOKEN"])
    pid = text("SELECT pg_backend_pid()")
    engine = read_engine()
    victim, spare, other = engine.connect(), engine.connect(), engine.connect()
    try:
        for backend in (victim.execute(pid).scalar_one(), spare.execute(pid).scalar_one()):
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        other.close()
        with pytest.raises(OperationalError):
            users._TOKEN_READ.first(victim, {"digest": digest})
        victim.close()
    finally:
        spare.close()  # dead, back in the pool last: the next checkout's (last in, first out)
    with engine.connect() as next_one:  # idle for less than the ping's second: not pinged
        assert users._TOKEN_READ.first(next_one, {"digest": digest}) is not None


async def _lost_on_the_loop(digest: str) -> None:
    """The same on the event loop's pool (async_read_engine)."""
    try:
        async with async_read_engine().connect() as victim:
            assert await users._TOKEN_READ.first_async(victim, {"digest": digest}) is not None
            backend = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            with read_engine().connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            with pytest.raises(OperationalError):
                await users._TOKEN_READ.first_async(victim, {"digest": digest})
            assert victim.invalidated
        async with async_read_engine().connect() as fresh:
            assert await users._TOKEN_READ.first_async(fresh, {"digest": digest}) is not None
    finally:
        await close_async_read_engine()
