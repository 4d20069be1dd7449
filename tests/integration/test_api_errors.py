"""Bad input gets a clear 4xx, never a 500 or a half-written state (real PostgreSQL)."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from minipaas import queue
from minipaas.api.app import create_app
from minipaas.config import get_settings
from minipaas.queue import get_redis
from minipaas.services import auth_throttle
from tests.support.stack import Stack, free_port

pytestmark = [pytest.mark.docker]


@pytest.fixture
def client(stack: Stack) -> Iterator[TestClient]:
    with TestClient(
        create_app(), raise_server_exceptions=False, headers=stack.admin_headers
    ) as test_client:
        yield test_client


def _body(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "image": "minipaas-test/hello:v1", "internal_port": 80, **extra}


@pytest.mark.parametrize(
    ("change", "field", "hint"),
    [
        ({"name": "Bad_Name"}, "name", "DNS label"),
        ({"name": "x" * 64}, "name", "DNS label"),
        ({"image": "not a reference"}, "image", "Docker image reference"),
        ({"image": "UPPER/case"}, "image", "Docker image reference"),
        ({"internal_port": 0}, "internal_port", "greater than or equal to 1"),
        ({"internal_port": 65536}, "internal_port", "less than or equal to 65535"),
        ({"cpus": 1e-10}, "cpus", "greater than or equal to 0.01"),
        ({"memory_mb": 1}, "memory_mb", "greater than or equal to 6"),
        ({"env": {"1BAD": "x"}}, "env", "env name"),
        ({"command": ""}, "command", "must not be empty"),
        ({"pull_policy": "sometimes"}, "pull_policy", "if-not-present"),
        ({"privileged": True}, "privileged", "Extra inputs are not permitted"),
        ({"host_config": {"Binds": ["/:/host"]}}, "host_config", "Extra inputs"),
    ],
)
def test_invalid_app_bodies_get_422_naming_the_field(
    client: TestClient, app_name: str, change: dict[str, object], field: str, hint: str
) -> None:
    response = client.post("/apps", json={**_body(app_name), **change})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(field in map(str, error["loc"]) and hint in error["msg"] for error in detail), detail
    # nothing was written: the name is still free
    assert client.post("/apps", json=_body(app_name)).status_code == 201


def test_malformed_json_and_missing_fields(client: TestClient) -> None:
    response = client.post(
        "/apps", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert client.post("/apps", json={}).status_code == 422
    assert client.post("/apps", json=[1, 2]).status_code == 422


def test_duplicate_name_is_409_also_under_concurrent_requests(
    client: TestClient, app_name: str
) -> None:
    def create(_: int) -> int:
        return client.post("/apps", json=_body(app_name)).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(create, range(8)))
    assert codes == [201] + [409] * 7
    duplicate = client.post("/apps", json=_body(app_name))
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["detail"]


def test_unknown_ids_are_404_everywhere(client: TestClient) -> None:
    missing = 999_999
    for method, path in [
        ("GET", f"/apps/{missing}"),
        ("PATCH", f"/apps/{missing}"),
        ("DELETE", f"/apps/{missing}"),
        ("POST", f"/apps/{missing}/deploy"),
        ("POST", f"/apps/{missing}/stop"),
        ("POST", f"/apps/{missing}/start"),
        ("POST", f"/apps/{missing}/restart"),
        ("POST", f"/apps/{missing}/remove"),
        ("GET", f"/apps/{missing}/logs"),
        ("GET", f"/apps/{missing}/deployments"),
        ("GET", f"/apps/{missing}/deployments/1"),
    ]:
        kwargs = {"json": {"image": "nginx"}} if method == "PATCH" else {}
        response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, path, response.text)
        assert str(missing) in response.json()["detail"]


def test_non_numeric_ids_and_bad_query_values_are_422(client: TestClient) -> None:
    assert client.get("/apps/abc").status_code == 422
    assert client.get("/apps", params={"limit": 0}).status_code == 422
    assert client.get("/apps", params={"offset": -1}).status_code == 422
    assert client.get("/apps/1/logs", params={"tail": 0}).status_code in (404, 422)
    assert client.get("/apps/99999999999999999999").status_code == 422


def test_endless_ids_and_nul_characters_get_a_4xx_never_a_500(
    client: TestClient, app_name: str
) -> None:
    app_id = client.post("/apps", json=_body(app_name)).json()["id"]
    # int() refuses over 4,300 digits: this was a 500, before any token was checked
    endless = "1" * 5000
    assert client.get(f"/apps/{endless}").status_code == 422
    assert client.get(f"/apps/{endless}", headers={"Authorization": ""}).status_code == 401
    get_redis().delete(auth_throttle._key("testclient"))  # the failure counts for a minute
    # A NUL in the path of a write: the write's own 4xx, not "the audit log cannot be written"
    nul_in_id = client.post(f"/apps/{app_id}%00/deploy")
    assert nul_in_id.status_code == 422, nul_in_id.text
    no_domain = client.delete(f"/apps/{app_id}/domains/a%00b.example.com")
    assert no_domain.status_code == 404, no_domain.text
    # In a body: PostgreSQL text cannot hold it, so it is refused before the database (was 500)
    for method, path, body in [
        ("POST", "/tokens", {"name": "laptop\u0000"}),
        ("PATCH", f"/apps/{app_id}", {"health_check_path": "/health\u0000"}),
        ("POST", f"/apps/{app_id}/domains", {"hostname": "a\u0000.example.com"}),
        ("POST", "/users", {"username": "bob\u0000", "role": "member"}),
    ]:
        response = client.request(method, path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert next(iter(body)) in response.text  # names the field to change
    assert client.get(f"/apps/{app_id}").json()["health_check_path"] == "/"


def test_a_name_whose_host_is_the_platforms_is_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APPS_DOMAIN=example.com with PLATFORM_HOST=paas.example.com: an app named "paas" would
    have the platform's host, which the router refuses to route (and its bad route held up
    every other app's full sync)."""
    settings = get_settings()
    monkeypatch.setattr(settings, "platform_host", f"paas.{settings.apps_domain}")
    refused = client.post("/apps", json=_body("paas"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "name"]
    assert "PLATFORM_HOST" in refused.text


def test_pagination(client: TestClient, app_name: str) -> None:
    for index in range(3):
        assert client.post("/apps", json=_body(f"{app_name}-{index}")).status_code == 201
    total = int(client.get("/apps").headers["x-total-count"])
    page = client.get("/apps", params={"limit": 2, "offset": total - 3})
    assert [app["name"] for app in page.json()] == [f"{app_name}-0", f"{app_name}-1"]
    assert page.headers["x-total-count"] == str(total)


def test_patch_changes_settings_for_the_next_deploy(client: TestClient, app_name: str) -> None:
    app = client.post("/apps", json=_body(app_name, command="httpd -f")).json()
    assert app["command"] == ["httpd", "-f"]
    changed = client.patch(
        f"/apps/{app['id']}",
        json={"image": "minipaas-test/hello:v2", "env": {"GREETING": "hi"}, "command": None},
    )
    assert changed.status_code == 200
    assert changed.json()["image"] == "minipaas-test/hello:v2"
    assert changed.json()["env"] == {"GREETING": "********"}  # values are never returned
    assert changed.json()["command"] is None
    assert changed.json()["internal_port"] == 80
    assert client.patch(f"/apps/{app['id']}", json={"internal_port": None}).status_code == 422


def test_deploy_when_redis_is_down_is_503_and_leaves_nothing_deploying(
    client: TestClient, app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = client.post("/apps", json=_body(app_name)).json()["id"]
    # A real Redis client aimed at a port where nothing listens
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    monkeypatch.setattr(queue, "get_redis", lambda: dead)

    response = client.post(f"/apps/{app_id}/deploy")
    assert response.status_code == 503
    assert "Redis" in response.json()["detail"]
    app = client.get(f"/apps/{app_id}").json()
    assert app["status"] == "created"
    history = client.get(f"/apps/{app_id}/deployments").json()
    assert [d["status"] for d in history] == ["failed"]
    assert "could not queue" in history[0]["error"]

    # lifecycle actions and deletes say the same and change nothing
    delete = client.delete(f"/apps/{app_id}")
    assert delete.status_code == 503
    assert client.get(f"/apps/{app_id}").status_code == 200


def test_a_body_that_is_not_json_says_to_send_json(api: httpx.Client) -> None:
    response = api.post(
        "/apps",
        content="name=x&image=y",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 422, response.text
    message = response.json()["detail"][0]["msg"]
    assert "Content-Type: application/json" in message and "x-www-form-urlencoded" in message


def test_validation_messages_have_no_value_error_prefix(api: httpx.Client) -> None:
    response = api.post("/apps", json={"name": "Bad_Name", "image": "x", "internal_port": 80})
    assert response.status_code == 422, response.text
    messages = [error["msg"] for error in response.json()["detail"]]
    assert messages and all(not m.startswith("Value error") for m in messages), messages
    assert any(m.startswith("name must be a DNS label") for m in messages), messages


@pytest.mark.parametrize(
    ("path", "raw_body", "field"),
    [
        ("/apps", '{"name": "x", "image": "\\ud800", "internal_port": 80}', "image"),
        (
            "/apps",
            '{"name": "x", "image": "a", "internal_port": 80, "env": {"A": "\\ud800"}}',
            "env",
        ),
        ("/apps", '{"name": "x", "image": "a", "internal_port": 80, "cpus": NaN}', "cpus"),
        ("/apps", '{"name": "x", "image": "a", "internal_port": 80, "cpus": Infinity}', "cpus"),
        ("/tokens", '{"name": "\\ud800"}', "name"),
        (
            "/apps",
            '{"name": "x", "image": "a", "internal_port": 80, "command": ["\\ud800"]}',
            "body",
        ),
    ],
)
def test_a_refused_value_json_cannot_hold_is_quoted_escaped_not_a_500(
    client: TestClient, path: str, raw_body: str, field: str
) -> None:
    """The 422 quotes the refused input: a lone surrogate or NaN made its JSON fail (500,
    and the connection was reset)."""
    response = client.post(path, content=raw_body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    problems = json.loads(response.text)["detail"]  # valid JSON, whatever the input
    assert any(field in problem["loc"] for problem in problems), problems
