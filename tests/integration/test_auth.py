"""Tokens, users, the audit log, throttling, and env secrets, against the real API."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from minipaas.api.app import create_app
from minipaas.config import get_settings
from minipaas.db.models import ApiToken, App
from minipaas.db.session import get_session
from minipaas.queue import get_redis
from minipaas.services import auth_throttle
from tests.support.flows import create_app as register_app
from tests.support.flows import deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import Member, new_member

pytestmark = [pytest.mark.docker]


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=60) as plain:
        yield plain


def test_health_needs_no_token_and_everything_else_does(client: httpx.Client) -> None:
    for path in ("/health", "/health/db", "/db-health", "/health/ready"):
        assert client.get(path).status_code == 200, path
    for method, path in [
        ("GET", "/apps"),
        ("POST", "/apps"),
        ("GET", "/me"),
        ("GET", "/tokens"),
        ("POST", "/tokens"),
        ("GET", "/users"),
        ("POST", "/users"),
        ("GET", "/audit"),
    ]:
        assert client.request(method, path).status_code == 401, (method, path)


def test_tokens_are_shown_once_listed_by_prefix_and_revocable(
    client: httpx.Client, api: httpx.Client
) -> None:
    member = new_member(api)
    assert member.token.startswith("mp_")
    me = client.get("/me", headers=member.headers)
    assert me.json()["username"] == member.username and me.json()["role"] == "member"

    issued = client.post(
        "/tokens", json={"name": "ci", "expires_in_days": 30}, headers=member.headers
    )
    assert issued.status_code == 201
    second = issued.json()
    assert second["token"].startswith(second["prefix"]) and len(second["prefix"]) == 11
    listed = client.get("/tokens", headers=member.headers).json()
    assert [t["name"] for t in listed][:2] == ["tests", "ci"]
    assert all("token" not in t for t in listed)
    assert listed[0]["last_used_at"] is not None  # the token we are using

    # only a keyed hash is stored
    with get_session() as db:
        stored = db.scalars(select(ApiToken.token_hash)).all()
    assert second["token"] not in stored and member.token not in stored

    # a token cannot mint one that outlives it
    child = client.post(
        "/tokens",
        json={"name": "child", "expires_in_days": 3650},
        headers={"Authorization": f"Bearer {second['token']}"},
    ).json()
    assert child["expires_at"] == second["expires_at"]
    unlimited = client.post(
        "/tokens", json={"name": "child2"}, headers={"Authorization": f"Bearer {second['token']}"}
    ).json()
    assert unlimited["expires_at"] == second["expires_at"]

    headers = {"Authorization": f"Bearer {second['token']}"}
    assert client.get("/me", headers=headers).status_code == 200
    assert client.delete(f"/tokens/{second['id']}", headers=member.headers).status_code == 200
    assert client.get("/me", headers=headers).status_code == 401
    # a token of someone else cannot be revoked, and looks missing
    assert client.delete(f"/tokens/{listed[0]['id']}", headers=dict(api.headers)).status_code == 404


def test_admins_manage_users_members_cannot(client: httpx.Client, api: httpx.Client) -> None:
    member = new_member(api)
    for method, path, body in [
        ("POST", "/users", {"username": "sneaky"}),
        ("GET", "/users", None),
        ("PATCH", f"/users/{member.id}", {"role": "admin"}),
        ("POST", f"/users/{member.id}/tokens", {"name": "x"}),
        ("GET", f"/users/{member.id}/tokens", None),
        ("DELETE", f"/users/{member.id}/tokens/1", None),
        ("GET", "/audit", None),
    ]:
        response = client.request(method, path, json=body, headers=member.headers)
        assert response.status_code == 403, (method, path, response.text)

    # an admin sees and revokes a member's token (a leaked one, say)
    listed = api.get(f"/users/{member.id}/tokens").json()
    assert [t["name"] for t in listed] == ["tests"] and "token" not in listed[0]
    spare = api.post(f"/users/{member.id}/tokens", json={"name": "spare"}).json()
    revoked = api.delete(f"/users/{member.id}/tokens/{spare['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert (
        client.get("/me", headers={"Authorization": f"Bearer {spare['token']}"}).status_code == 401
    )
    assert api.delete(f"/users/{member.id}/tokens/{listed[0]['id'] + 10_000}").status_code == 404
    assert api.post("/users", json={"username": member.username}).status_code == 409
    assert api.post("/users", json={"username": "Not A Name"}).status_code == 422
    disabled = api.patch(f"/users/{member.id}", json={"disabled": True})
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert client.get("/me", headers=member.headers).status_code == 401
    api.patch(f"/users/{member.id}", json={"disabled": False})
    assert client.get("/me", headers=member.headers).status_code == 200

    admin_id = api.get("/me").json()["id"]
    assert api.patch(f"/users/{admin_id}", json={"disabled": True}).status_code == 403


def test_changes_are_in_the_audit_log(api: httpx.Client, app_name: str) -> None:
    app_id = register_app(api, app_name, HELLO_V1)["id"]
    assert api.post(f"/apps/{app_id}/stop").status_code == 409
    # a refusal that rolls the database session back is recorded too
    duplicate = api.post("/apps", json={"name": app_name, "image": HELLO_V1, "internal_port": 80})
    assert duplicate.status_code == 409
    events = api.get("/audit", params={"limit": 20}).json()
    assert (events[0]["action"], events[0]["outcome"]) == ("POST /apps", "refused (409)")
    stop, create = events[1], events[2]
    assert (stop["action"], stop["target"], stop["outcome"]) == (
        "POST /apps/{app_id}/stop",
        f"/apps/{app_id}/stop",
        "refused (409)",
    )
    assert (create["action"], create["outcome"], create["actor"]) == ("POST /apps", "ok", "admin")
    assert create["client_ip"] == "127.0.0.1"


def test_env_values_are_encrypted_masked_and_reach_only_the_container(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    app = register_app(api, app_name, HELLO_V1, env={"DATABASE_PASSWORD": secret})
    assert app["env"] == {"DATABASE_PASSWORD": "********"}
    assert secret not in api.get(f"/apps/{app['id']}").text
    with get_session() as db:
        row = db.get(App, app["id"])
        assert row is not None and row.env_ciphertext and secret not in row.env_ciphertext
    deployment = deploy(api, app["id"])
    assert deployment["status"] == "succeeded", deployment["error"]
    assert secret not in str(deployment)

    import docker

    env = docker.from_env().api.inspect_container(deployment["container_id"])["Config"]["Env"]
    assert f"DATABASE_PASSWORD={secret}" in env
    for log in ("worker.log", "api.log"):
        assert secret not in (stack.settings.log_dir / log).read_text()


def test_repeated_failed_authentication_is_slowed_down(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process, so this client ("testclient") has its own counter and a low limit; other
    # in-process tests' failures of the last minute do not count here
    monkeypatch.setattr(get_settings(), "auth_failures_per_minute", 3)
    get_redis().delete(auth_throttle._key("testclient"))
    with TestClient(create_app()) as test_client:
        bad = {"Authorization": "Bearer mp_wrong"}
        codes = [test_client.get("/me", headers=bad).status_code for _ in range(3)]
        assert codes == [401, 401, 401]
        throttled = test_client.get("/me", headers=bad)
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert "too many failed" in throttled.json()["detail"]
        # a valid token from the same client still works
        assert test_client.get("/me", headers=stack.admin_headers).status_code == 200


def _member_client(stack: Stack, member: Member) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=60)


def test_limits_and_quotas(stack: Stack, api: httpx.Client, app_name: str) -> None:
    settings = stack.settings
    member = new_member(api)
    with _member_client(stack, member) as client:
        over = client.post(
            "/apps",
            json={
                "name": app_name,
                "image": HELLO_V1,
                "internal_port": 80,
                "memory_mb": settings.max_memory_mb + 1,
            },
        )
        assert over.status_code == 422
        # The platform's own 422 has request validation's shape, naming the field
        [problem] = over.json()["detail"]
        assert problem["loc"] == ["body", "memory_mb"], problem
        assert f"maximum of {settings.max_memory_mb}" in problem["msg"]

        memory_each = settings.user_max_memory_mb // settings.user_max_apps
        for index in range(settings.user_max_apps):
            created = client.post(
                "/apps",
                json={
                    "name": f"{app_name}-{index}",
                    "image": HELLO_V1,
                    "internal_port": 80,
                    "memory_mb": memory_each,
                },
            )
            assert created.status_code == 201, created.text
        refused = client.post(
            "/apps", json={"name": f"{app_name}-x", "image": HELLO_V1, "internal_port": 80}
        )
        assert refused.status_code == 403
        assert f"may have {settings.user_max_apps}" in refused.json()["detail"]

        first = client.get("/apps").json()[0]
        grown = client.patch(f"/apps/{first['id']}", json={"memory_mb": memory_each + 64})
        assert grown.status_code == 403
        assert "memory quota" in grown.json()["detail"]
        assert str(settings.user_max_memory_mb) in grown.json()["detail"]


def test_image_policy_refuses_other_images(
    stack: Stack, api: httpx.Client, monkeypatch: pytest.MonkeyPatch, app_name: str
) -> None:
    monkeypatch.setattr(get_settings(), "allowed_images", "minipaas-test/*, registry.local/*")
    token = api.headers["authorization"]
    with TestClient(create_app(), headers={"Authorization": token}) as test_client:
        refused = test_client.post(
            "/apps", json={"name": app_name, "image": "nginx:1.27", "internal_port": 80}
        )
        assert refused.status_code == 422
        [problem] = refused.json()["detail"]
        assert problem["loc"] == ["body", "image"] and "'minipaas-test/*'" in problem["msg"]
        allowed = test_client.post(
            "/apps", json={"name": app_name, "image": HELLO_V1, "internal_port": 80}
        )
        assert allowed.status_code == 201
