"""The API's read fast paths answer exactly as before: list pages built from column rows equal
the single-app answers, pagination and X-Total-Count hold, authentication is checked on every
request (no cache), and the pure ASGI middleware still tags every answer with a request id."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select

from minipaas.api.app import create_app
from minipaas.api.schemas import AppAnswer, AppOut, app_answers
from minipaas.clock import now
from minipaas.db.models import App, AppReplica, AppStatus
from minipaas.db.session import get_session
from minipaas.services.app_rows import APP_COLUMNS, app_row
from tests.support.images import HELLO_V1
from tests.support.rows import run_settings
from tests.support.stack import Stack
from tests.support.users import Member, new_member

pytestmark = [pytest.mark.docker]

APP_FIELDS = {
    "id", "name", "owner_id", "image", "internal_port", "env", "command", "memory_mb", "cpus",
    "pids", "pull_policy", "health_check_path", "health_check_running_seconds", "status",
    "status_detail", "container_name", "published_port", "current_deployment_id",
    "restart_count", "last_exit_code", "next_restart_at", "delete_requested_at", "created_at",
    "updated_at", "url",
    "domains", "path", "replicas", "replicas_serving", "https_redirect", "hsts_max_age",
}  # fmt: skip


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=60) as plain:
        yield plain


@pytest.fixture
def member(api: httpx.Client) -> Member:
    return new_member(api)


def _create(client: httpx.Client, member: Member, name: str, **extra: object) -> int:
    body = {"name": name, "image": HELLO_V1, "internal_port": 80, **extra}
    created = client.post("/apps", json=body, headers=member.headers)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def test_list_rows_equal_the_single_app_answers(
    client: httpx.Client, member: Member, app_name: str
) -> None:
    plain = _create(client, member, f"{app_name}-a")
    rich = _create(
        client,
        member,
        f"{app_name}-b",
        env={"SECRET": "value", "MODE": "x"},
        command=["httpd", "-f", "-p", "80"],
        health_check_running_seconds=2,
    )
    for hostname in (f"z-{rich}.example.test", f"a-{rich}.example.test"):
        added = client.post(
            f"/apps/{rich}/domains", json={"hostname": hostname}, headers=member.headers
        )
        assert added.status_code == 201, added.text

    listed = client.get("/apps", headers=member.headers)
    assert listed.status_code == 200
    assert listed.headers["content-type"] == "application/json"
    rows = {row["id"]: row for row in listed.json()}
    assert set(rows) == {plain, rich}
    for app_id in (plain, rich):
        one = client.get(f"/apps/{app_id}", headers=member.headers).json()
        assert set(one) == APP_FIELDS
        assert rows[app_id] == one
        # ... and both equal the answer built from the ORM object (PATCH, POST /apps, actions)
        assert one == _from_orm(app_id)
    shown = rows[rich]
    assert shown["env"] == {"MODE": "********", "SECRET": "********"}  # names only
    assert "value" not in listed.text
    assert shown["domains"] == [f"a-{rich}.example.test", f"z-{rich}.example.test"]
    assert shown["path"] == f"/apps/{rich}/"
    assert shown["url"].startswith(f"http://{app_name}-b.")
    assert rows[plain]["env"] == {} and rows[plain]["domains"] == []


def _from_orm(app_id: int) -> dict[str, Any]:
    with get_session() as db:
        app = db.get(App, app_id)
        assert app is not None
        answer: dict[str, Any] = json.loads(AppOut.model_validate(app).model_dump_json())
    return answer


def test_rows_count_serving_replicas_as_the_router_does(app_name: str) -> None:
    """A row of app_rows counts replicas in rotation with the router's own rule, also when a
    replica's endpoint repeats another's (a port handed out again) or none is healthy. Built
    in a transaction never committed, so the platform's worker never sees it."""
    with get_session() as db:
        app = App(name=app_name, owner_id=None, replicas=4, status=AppStatus.RUNNING)
        app.set_run_settings(run_settings(image=HELLO_V1))
        app.container_id, app.published_port = "c0", 20001
        db.add(app)
        db.flush()
        replicas = [
            (1, 20001, None),  # the first one's endpoint again
            (2, 20002, None),
            (3, 20003, now()),  # failing its probes
        ]
        for replica, port, unhealthy in replicas:
            db.add(
                AppReplica(
                    app_id=app.id,
                    replica=replica,
                    container_id=f"c{replica}",
                    container_name=f"{app_name}-{replica}",
                    published_port=port,
                    unhealthy_since=unhealthy,
                )
            )
        db.flush()
        for first_unhealthy, every_unhealthy in ((None, False), (now(), False), (now(), True)):
            app.unhealthy_since = first_unhealthy
            if every_unhealthy:
                for extra in app.extra_replicas:
                    extra.unhealthy_since = now()
            db.flush()
            db.expire_all()
            reloaded = db.get(App, app.id)
            assert reloaded is not None
            row = app_row(db.execute(select(*APP_COLUMNS).where(App.id == app.id)).one()._mapping)
            from_row = json.loads(AppAnswer.dump_json(app_answers([row])[0]))
            from_orm = json.loads(AppOut.model_validate(reloaded).model_dump_json())
            assert from_row["replicas_serving"] == from_orm["replicas_serving"]
            assert from_row == from_orm
        assert from_orm["replicas_serving"] == 3  # none healthy: every running endpoint, once
        db.rollback()


def test_an_id_written_another_way_reads_the_same_app(
    client: httpx.Client, api: httpx.Client, member: Member, app_name: str
) -> None:
    app_id = _create(client, member, app_name)
    plain = client.get(f"/apps/{app_id}", headers=member.headers)
    assert plain.status_code == 200
    stranger = new_member(api)
    for written in (f"+{app_id}", f"0{app_id}", f"{app_id}.0"):
        same = client.get(f"/apps/{written}", headers=member.headers)
        assert (same.status_code, same.json()) == (200, plain.json()), written
        hidden = client.get(f"/apps/{written}", headers=stranger.headers)
        assert hidden.status_code == 404, written


def test_pages_and_total_count_of_the_callers_apps(
    client: httpx.Client, api: httpx.Client, member: Member, app_name: str
) -> None:
    ids = [_create(client, member, f"{app_name}-{n}") for n in range(3)]

    def page(**params: int) -> tuple[list[int], str]:
        response = client.get("/apps", params=params, headers=member.headers)
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()], response.headers["x-total-count"]

    assert page() == (ids, "3")
    assert page(limit=2) == (ids[:2], "3")
    assert page(limit=2, offset=2) == (ids[2:], "3")
    # past the end: no row carries the total, it is still counted
    assert page(offset=3) == ([], "3")
    assert page(offset=1000) == ([], "3")
    nobody = new_member(api)
    empty = client.get("/apps", headers=nobody.headers)
    assert (empty.json(), empty.headers["x-total-count"]) == ([], "0")
    # the admin sees every app, the member's among them
    everything = api.get("/apps", params={"limit": 500})
    assert set(ids) <= {row["id"] for row in everything.json()}
    assert int(everything.headers["x-total-count"]) >= len(everything.json()) >= 3


@pytest.mark.parametrize("how", ["revoked token", "disabled user"])
def test_a_lost_token_is_refused_on_the_very_next_request(
    client: httpx.Client, api: httpx.Client, member: Member, app_name: str, how: str
) -> None:
    app_id = _create(client, member, app_name)
    paths = ("/apps", f"/apps/{app_id}")
    for path in paths:  # warm: any cache would now hold this token
        assert client.get(path, headers=member.headers).status_code == 200
    if how == "revoked token":
        tokens = client.get("/tokens", headers=member.headers).json()
        for token in tokens:
            client.delete(f"/tokens/{token['id']}", headers=member.headers)
    else:
        assert api.patch(f"/users/{member.id}", json={"disabled": True}).status_code == 200
    for path in paths:
        refused = client.get(path, headers=member.headers)
        assert refused.status_code == 401, (path, refused.text)
        assert refused.json() == {"detail": "missing, invalid, expired or revoked token"}


def test_every_answer_carries_a_request_id(client: httpx.Client, member: Member) -> None:
    given = client.get("/apps", headers={**member.headers, "X-Request-ID": "fast-path-1"})
    assert given.headers["x-request-id"] == "fast-path-1"
    for response in (
        client.get("/health"),
        client.get("/apps"),  # 401
        client.get("/apps/2000000000", headers=member.headers),  # 404
        client.get("/apps/abc", headers=member.headers),  # 422
        client.get("/no-such-route"),
    ):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), response


def test_one_app_is_read_with_the_token_in_one_statement(
    client: httpx.Client, api: httpx.Client, member: Member, app_name: str
) -> None:
    """GET /apps/{id} checks the token, its user and the app's visibility and reads the app
    in one round trip; another member's app is still a 404 answered the same way."""
    app_id = _create(client, member, app_name, env={"SECRET": "value"})
    stranger = new_member(api)
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))  # (conn, cursor, statement, ...)

    with TestClient(create_app()) as in_process:
        # The token's last-use stamp is written at most once a minute: get it done first
        assert in_process.get(f"/apps/{app_id}", headers=member.headers).status_code == 200
        # Every engine's (the event loop's own too: db.session.async_read_engine)
        event.listen(Engine, "before_cursor_execute", record)
        try:
            mine = in_process.get(f"/apps/{app_id}", headers=member.headers)
        finally:
            event.remove(Engine, "before_cursor_execute", record)
        hidden = in_process.get(f"/apps/{app_id}", headers=stranger.headers)
    assert mine.status_code == 200, mine.text
    assert set(mine.json()) == APP_FIELDS
    assert mine.json()["env"] == {"SECRET": "********"}
    assert len(statements) == 1, statements
    assert hidden.status_code == 404
    assert hidden.json() == {"detail": f"app {app_id} does not exist"}


def test_a_deploy_request_takes_few_round_trips(
    client: httpx.Client, api: httpx.Client, member: Member, app_name: str
) -> None:
    """POST /apps/{id}/deploy: the token, its user and the app's visibility in one statement
    (no ORM load of the app), the audit record and its outcome each one autocommitted
    statement, and two transactions (the request, then the owner's slot). 50 deploys sent at
    once are CPU-bound on a small host: each round trip here is paid 50 times."""
    app_id = _create(client, member, app_name)
    statements: list[str] = []
    commits: list[object] = []

    def record(*args: Any) -> None:
        statements.append(" ".join(str(args[2]).split()))  # (conn, cursor, statement, ...)

    def committed(*args: Any) -> None:
        commits.append(args[0])

    with TestClient(create_app()) as in_process:
        # The token's last-use stamp is written at most once a minute: get it done first
        assert in_process.get(f"/apps/{app_id}", headers=member.headers).status_code == 200
        event.listen(Engine, "before_cursor_execute", record)
        event.listen(Engine, "commit", committed)
        try:
            deployed = in_process.post(f"/apps/{app_id}/deploy", headers=member.headers)
        finally:
            event.remove(Engine, "before_cursor_execute", record)
            event.remove(Engine, "commit", committed)
    assert deployed.status_code == 202, deployed.text
    app_loads = [s for s in statements if s.startswith("SELECT apps.id, apps.name")]
    assert len(app_loads) == 1, statements  # the request's own, FOR UPDATE
    assert "FOR UPDATE" in app_loads[0]
    assert len(statements) <= 13, statements
    assert len(commits) <= 2, statements
    audit = api.get("/audit", params={"limit": 5}).json()
    mine = next(row for row in audit if row["target"] == f"/apps/{app_id}/deploy")
    assert mine["outcome"] == "ok" and mine["actor"] == member.username
