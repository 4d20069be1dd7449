"""Every app route x {owner, other member, admin, no token, revoked token}."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import Member, new_member

pytestmark = [pytest.mark.docker]

# (method, path template, body): every route that takes an app id; {id} is formatted in both
APP_ROUTES: list[tuple[str, str, dict[str, object] | None]] = [
    ("GET", "/apps/{id}", None),
    ("PATCH", "/apps/{id}", {"internal_port": 8080}),
    ("POST", "/apps/{id}/deploy", None),
    ("GET", "/apps/{id}/releases", None),
    ("POST", "/apps/{id}/rollback", None),
    ("POST", "/apps/{id}/stop", None),
    ("POST", "/apps/{id}/start", None),
    ("POST", "/apps/{id}/restart", None),
    ("POST", "/apps/{id}/remove", None),
    ("GET", "/apps/{id}/logs", None),
    ("GET", "/apps/{id}/replicas", None),
    ("GET", "/apps/{id}/deployments", None),
    ("GET", "/apps/{id}/deployments/{deployment}", None),
    ("POST", "/apps/{id}/deployments/{deployment}/cancel", None),
    ("GET", "/apps/{id}/deployments/{deployment}/events", None),
    ("POST", "/apps/{id}/domains", {"hostname": "new-{id}.example.test"}),
    ("GET", "/apps/{id}/domains", None),
    ("DELETE", "/apps/{id}/domains/www-{id}.example.test", None),
    ("DELETE", "/apps/{id}", None),
]


@pytest.fixture
def owner(api: httpx.Client) -> Member:
    return new_member(api)


@pytest.fixture
def other(api: httpx.Client) -> Member:
    return new_member(api)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=60) as plain:
        yield plain


def _app_with_a_deployment(client: httpx.Client, member: Member, name: str) -> tuple[int, int]:
    created = client.post(
        "/apps",
        json={"name": name, "image": HELLO_V1, "internal_port": 80},
        headers=member.headers,
    )
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    # before the deploy, so the route it publishes already has the domain
    domain = client.post(
        f"/apps/{app_id}/domains",
        json={"hostname": f"www-{app_id}.example.test"},
        headers=member.headers,
    )
    assert domain.status_code == 201, domain.text
    deployed = client.post(f"/apps/{app_id}/deploy", headers=member.headers)
    assert deployed.status_code == 202, deployed.text
    return app_id, deployed.json()["id"]


def _call(
    client: httpx.Client,
    route: tuple[str, str, dict[str, object] | None],
    app_id: int,
    deployment_id: int,
    headers: dict[str, str],
) -> httpx.Response:
    method, template, body = route
    path = template.format(id=app_id, deployment=deployment_id)
    if body is not None:
        body = {k: v.format(id=app_id) if isinstance(v, str) else v for k, v in body.items()}
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("route", APP_ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_other_members_and_anonymous_callers_never_reach_an_app(
    client: httpx.Client,
    owner: Member,
    other: Member,
    app_name: str,
    route: tuple[str, str, dict[str, object] | None],
) -> None:
    app_id, deployment_id = _app_with_a_deployment(client, owner, app_name)
    revoked_token = client.post("/tokens", json={"name": "old"}, headers=owner.headers).json()
    assert client.delete(f"/tokens/{revoked_token['id']}", headers=owner.headers).is_success
    before = client.get(f"/apps/{app_id}", headers=owner.headers).json()

    as_other = _call(client, route, app_id, deployment_id, other.headers)
    assert as_other.status_code == 404, as_other.text
    assert as_other.json()["detail"] == f"app {app_id} does not exist"
    # exactly what a missing app looks like
    missing = _call(client, route, 2_000_000_000, deployment_id, other.headers)
    assert (missing.status_code, missing.json()["detail"]) == (
        404,
        "app 2000000000 does not exist",
    )

    for headers in (
        {},
        {"Authorization": "Bearer mp_not-a-real-token"},
        {"Authorization": f"Bearer {revoked_token['token']}"},
        {"Authorization": f"Basic {owner.token}"},
    ):
        anonymous = _call(client, route, app_id, deployment_id, headers)
        assert anonymous.status_code == 401, (headers, anonymous.text)
        assert anonymous.json() == {"detail": "missing, invalid, expired or revoked token"}
        assert anonymous.headers["www-authenticate"] == "Bearer"

    # nothing changed for the owner
    after = client.get(f"/apps/{app_id}", headers=owner.headers).json()
    assert after["internal_port"] == before["internal_port"]
    assert after["name"] == before["name"]
    assert after["domains"] == before["domains"] == [f"www-{app_id}.example.test"]


@pytest.mark.parametrize("route", APP_ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_owner_and_admin_reach_the_app(
    client: httpx.Client,
    api: httpx.Client,
    owner: Member,
    app_name: str,
    route: tuple[str, str, dict[str, object] | None],
) -> None:
    app_id, deployment_id = _app_with_a_deployment(client, owner, app_name)
    for caller in ("owner", "admin"):
        headers = owner.headers if caller == "owner" else dict(api.headers)
        response = _call(client, route, app_id, deployment_id, headers)
        # access is granted: what follows is the route's own answer (409 for an action that
        # does not fit the state, 202/204 for work), never 401/403/404
        assert response.status_code not in (401, 403, 404), (caller, response.text)
        if route[0] == "DELETE":
            break


def test_lists_only_show_the_callers_apps(
    client: httpx.Client, api: httpx.Client, owner: Member, other: Member, app_name: str
) -> None:
    mine, _ = _app_with_a_deployment(client, owner, app_name)
    theirs, _ = _app_with_a_deployment(client, other, f"{app_name}-other")
    owner_view = {a["id"] for a in client.get("/apps", headers=owner.headers).json()}
    other_view = {a["id"] for a in client.get("/apps", headers=other.headers).json()}
    admin_view = {a["id"] for a in api.get("/apps", params={"limit": 500}).json()}
    assert mine in owner_view and theirs not in owner_view
    assert theirs in other_view and mine not in other_view
    assert {mine, theirs} <= admin_view
    owned = client.get("/apps", headers=owner.headers)
    assert owned.headers["x-total-count"] == "1"
