"""The floor of bench/api_throughput.py: the API's read queries answered by a bare ASGI app.

No framework, no middleware, no authentication: one SQL statement per request (on the pool
the API's GET requests use, one hop to a worker thread as the API's database calls take),
the rows turned straight into JSON by pydantic-core. Served by the same server
stack as the API (uvicorn processes started the same way), so the API's ratio to it is the
cost of everything the API adds: routing, auth, ownership, validation, logs, metrics.

With FLOOR_ON_DRIVER=1 (api_throughput.py --driver-floor) the statement runs on the driver's
cursor instead of SQLAlchemy's execute, as the API's two hot reads do (db.driver_reads): the
stricter floor. The default keeps the floor the goal was set against (issue 17: 0.6x of it
stands for 3x the seed implementation).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs

from pydantic_core import to_json
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from minipaas.db.session import read_engine

# Every column the API's AppOut answer is built from, and the app's domains in the same row
_COLUMNS = """
    id, name, owner_id, image, internal_port, env_names, command, memory_mb, cpus, pids,
    pull_policy, health_check_path, health_check_running_seconds, status, status_detail,
    container_name, published_port, current_deployment_id, restart_count, last_exit_code,
    next_restart_at, created_at, updated_at,
    array(SELECT hostname FROM app_domains d WHERE d.app_id = apps.id ORDER BY hostname)
        AS domains
"""
_ONE = text(f"SELECT {_COLUMNS} FROM apps WHERE id = :id")
_PAGE = text(f"SELECT {_COLUMNS} FROM apps ORDER BY id LIMIT :limit OFFSET :offset")
_JSON = [(b"content-type", b"application/json")]
# On the driver path: each statement as the driver takes it (:name -> %(name)s) and its
# column names, both worked out once
_DRIVER_SQL: dict[int, str] = {}
_DRIVER_NAMES: dict[str, list[str]] = {}


def _rows(statement: Any, params: dict[str, int]) -> list[dict[str, Any]]:
    with read_engine().connect() as connection:
        result = connection.execute(statement, params)
        names = list(result.keys())
        return [dict(zip(names, row, strict=True)) for row in result]


def _driver_rows(statement: Any, params: dict[str, int]) -> list[dict[str, Any]]:
    sql = _DRIVER_SQL.get(id(statement))
    if sql is None:
        sql = _DRIVER_SQL[id(statement)] = str(statement.compile(dialect=read_engine().dialect))
    with read_engine().connect() as connection:
        driver: Any = connection.connection.driver_connection
        with driver.cursor() as cursor:
            cursor.execute(sql, params)
            names = _DRIVER_NAMES.get(sql)
            if names is None:
                names = _DRIVER_NAMES[sql] = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


_read = _driver_rows if os.environ.get("FLOOR_ON_DRIVER") == "1" else _rows


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def floor_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    if path == "/health":
        await _answer(send, 200, b'{"status":"ok"}')
    elif path == "/apps":
        query = parse_qs(scope["query_string"].decode())
        params = {"limit": int(query.get("limit", ["50"])[0]), "offset": 0}
        await _answer(send, 200, to_json(await run_in_threadpool(_read, _PAGE, params)))
    elif path.startswith("/apps/") and path[6:].isdigit():
        rows = await run_in_threadpool(_read, _ONE, {"id": int(path[6:])})
        await _answer(send, 200 if rows else 404, to_json(rows[0] if rows else {}))
    else:
        await _answer(send, 404, b"{}")


def create_floor_app() -> Any:
    """The factory the server imports (as it imports the API's create_app)."""
    return floor_app
