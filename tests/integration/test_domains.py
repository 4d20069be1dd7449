"""An app's own domains: validation, one app per name, the members' policy, list and remove."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from minipaas.api.app import create_app
from minipaas.config import get_settings
from minipaas.services import domains, routing
from tests.support.flows import create_app as register_app
from tests.support.flows import deploy
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack
from tests.support.users import Member, new_member
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


@pytest.fixture
def member(api: httpx.Client) -> Member:
    return new_member(api)


@pytest.fixture
def as_member(stack: Stack, member: Member) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=60) as client:
        yield client


def _add(client: httpx.Client | TestClient, app_id: int, hostname: str) -> httpx.Response:
    return client.post(f"/apps/{app_id}/domains", json={"hostname": hostname})


def _hostnames(client: httpx.Client, app_id: int) -> list[str]:
    listed = client.get(f"/apps/{app_id}/domains")
    assert listed.status_code == 200, listed.text
    return [row["hostname"] for row in listed.json()]


def test_hostnames_are_checked_with_messages_that_say_what_to_change(
    stack: Stack, as_member: httpx.Client, app_name: str
) -> None:
    settings = stack.settings
    app = register_app(as_member, app_name, HELLO_V1)
    other = register_app(as_member, f"{app_name}-b", HELLO_V1)
    apps_domain, platform = settings.apps_domain, settings.platform_host
    cases: list[tuple[str, int, str]] = [
        ("not a host!", 422, "is not a host name"),
        ("under_score.example.test", 422, "such as 'www.example.com'"),
        (f"{'a' * 64}.example.test", 422, "is not a host name"),
        (f"{'a.' * 127}test", 422, "is not a host name"),  # over 253 characters
        ("10.0.0.1", 422, "looks like an IP address"),
        ("localhost", 422, "'localhost' cannot"),
        (platform, 403, "PLATFORM_HOST"),
        (f"admin.{platform}", 403, "choose a name outside it"),
        (apps_domain, 403, "APPS_DOMAIN"),
        (f"{app_name}.{apps_domain}", 409, "already app"),
        (f"{other['name']}.{apps_domain}", 409, "host of another app"),
        (f"no-such-app-{app_name}.{apps_domain}", 403, f"'{app_name}.{apps_domain}'"),
        (f"www.{app_name}.{apps_domain}", 403, "under the apps domain"),
    ]
    for hostname, status, words in cases:
        refused = _add(as_member, app["id"], hostname)
        assert refused.status_code == status, (hostname, refused.text)
        detail = refused.json()["detail"]
        if status == 422:  # request validation's shape, naming the field
            assert [problem["loc"] for problem in detail] == [["body", "hostname"]], detail
            detail = detail[0]["msg"]
        assert words in detail, (hostname, refused.text)
    assert _hostnames(as_member, app["id"]) == []

    # one spelling per name: lowercase, no trailing dot
    added = _add(as_member, app["id"], f"WWW.{app_name.upper()}.Example.Test.")
    assert added.status_code == 201, added.text
    hostname = f"www.{app_name}.example.test"
    port = f":{settings.router_port}"
    assert added.json() | {"created_at": None, "tls": None} == {
        "hostname": hostname,
        "app_id": app["id"],
        "url": f"http://{hostname}{port}/",
        "created_at": None,
        "tls": None,
    }
    # HTTPS: the stack has ACME on (tests/e2e/test_https.py), so the certificate is on its way
    assert added.json()["tls"]["status"] in ("pending", "failed")
    again = _add(as_member, app["id"], hostname)
    assert again.status_code == 409
    assert again.json()["detail"] == f"'{hostname}' is already a domain of app {app_name}"
    assert _add(as_member, app["id"], "").status_code == 422  # the body's own validation


def test_a_name_reaches_one_app_only_even_under_concurrent_adds(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    first = register_app(api, app_name, HELLO_V1)
    second = register_app(api, f"{app_name}-b", HELLO_V1)
    hostname = f"{app_name}.example.test"

    def add(index: int) -> int:
        app_id = (first, second)[index % 2]["id"]
        with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers) as client:
            return _add(client, app_id, hostname).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(add, range(8)))
    assert codes == [201, 409, 409, 409, 409, 409, 409, 409]
    owners = [app["id"] for app in (first, second) if _hostnames(api, app["id"]) == [hostname]]
    assert len(owners) == 1
    loser = second["id"] if owners == [first["id"]] else first["id"]
    refused = _add(api, loser, hostname)
    assert refused.status_code == 409
    assert "already a domain of another app" in refused.json()["detail"]
    assert "remove it there first" in refused.json()["detail"]


def test_apps_show_their_url_and_domains(stack: Stack, api: httpx.Client, app_name: str) -> None:
    settings = stack.settings
    app = register_app(api, app_name, HELLO_V1)
    assert app["url"] == f"http://{app_name}.{settings.apps_domain}:{settings.router_port}/"
    assert app["path"] == f"/apps/{app['id']}/"
    assert app["domains"] == []
    for hostname in (f"b.{app_name}.example.test", f"a.{app_name}.example.test"):
        assert _add(api, app["id"], hostname).status_code == 201
    expected = [f"a.{app_name}.example.test", f"b.{app_name}.example.test"]
    assert api.get(f"/apps/{app['id']}").json()["domains"] == expected
    listed = {row["id"]: row for row in api.get("/apps", params={"limit": 500}).json()}
    assert listed[app["id"]]["domains"] == expected
    assert listed[app["id"]]["url"] == app["url"]


def test_list_then_remove(api: httpx.Client, app_name: str) -> None:
    app = register_app(api, app_name, HELLO_V1)
    names = [f"{label}.{app_name}.example.test" for label in ("c", "a", "b")]
    for hostname in names:
        assert _add(api, app["id"], hostname).status_code == 201
    listed = api.get(f"/apps/{app['id']}/domains", params={"limit": 2, "offset": 1})
    assert listed.headers["x-total-count"] == "3"
    assert [row["hostname"] for row in listed.json()] == sorted(names)[1:]

    removed = api.delete(f"/apps/{app['id']}/domains/A.{app_name}.example.test")
    assert removed.status_code == 204, removed.text
    assert removed.content == b""
    gone = api.delete(f"/apps/{app['id']}/domains/a.{app_name}.example.test")
    assert gone.status_code == 404
    assert gone.json()["detail"] == (
        f"app {app_name} has no domain 'a.{app_name}.example.test'; "
        f"GET /apps/{app['id']}/domains lists them"
    )
    assert api.get(f"/apps/{app['id']}/domains").headers["x-total-count"] == "2"
    # a freed name can go to another app
    other = register_app(api, f"{app_name}-b", HELLO_V1)
    assert _add(api, other["id"], f"a.{app_name}.example.test").status_code == 201


def test_an_app_has_a_limited_number_of_domains(api: httpx.Client, app_name: str) -> None:
    app = register_app(api, app_name, HELLO_V1)
    for index in range(domains.MAX_DOMAINS_PER_APP):
        added = _add(api, app["id"], f"d{index}.{app_name}.example.test")
        assert added.status_code == 201, added.text
    refused = _add(api, app["id"], f"one-more.{app_name}.example.test")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"app {app_name} has {domains.MAX_DOMAINS_PER_APP} domains, the most an app may have; "
        "remove one first"
    )


def test_members_add_only_names_allowed_domains_permits(
    stack: Stack,
    api: httpx.Client,
    member: Member,
    monkeypatch: pytest.MonkeyPatch,
    app_name: str,
) -> None:
    # In-process, with the policy changed for this API only
    monkeypatch.setattr(get_settings(), "allowed_domains", "*.Example.test, example.test")
    app = register_app(api, app_name, HELLO_V1)
    with httpx.Client(base_url=stack.api_url, headers=member.headers) as mine:
        owned = register_app(mine, f"{app_name}-m", HELLO_V1)
    with TestClient(create_app(), headers=member.headers) as as_member:
        refused = _add(as_member, owned["id"], f"{app_name}.elsewhere.test")
        assert refused.status_code == 403
        detail = refused.json()["detail"]
        assert "ALLOWED_DOMAINS permits members only '*.example.test', 'example.test'" in detail
        assert "ask an admin" in detail
        assert _add(as_member, owned["id"], f"{app_name}.example.test").status_code == 201
    with TestClient(create_app(), headers=stack.admin_headers) as as_admin:
        # admins are exempt
        assert _add(as_admin, app["id"], f"{app_name}.elsewhere.test").status_code == 201
    monkeypatch.setattr(get_settings(), "allowed_domains", "")
    with TestClient(create_app(), headers=member.headers) as as_member:
        refused = _add(as_member, owned["id"], f"www.{app_name}.example.test")
        assert refused.status_code == 403
        assert "ALLOWED_DOMAINS is empty" in refused.json()["detail"]


@pytest.fixture
def router_unreachable(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """This process's router client looks for the control socket where none is."""
    monkeypatch.setattr(get_settings(), "data_dir", tmp_path)
    routing.get_router.cache_clear()
    yield
    monkeypatch.undo()
    routing.get_router.cache_clear()


def test_an_add_the_router_cannot_take_changes_nothing(
    stack: Stack, api: httpx.Client, router_unreachable: None, app_name: str
) -> None:
    app = register_app(api, app_name, HELLO_V1)
    with TestClient(create_app(), headers=stack.admin_headers) as in_process:
        refused = _add(in_process, app["id"], f"{app_name}.example.test")
    assert refused.status_code == 503
    assert "nothing was changed, try again shortly" in refused.json()["detail"]
    assert _hostnames(api, app["id"]) == []


def _deployed(api: httpx.Client, name: str, image: str) -> dict[str, Any]:
    app = register_app(api, name, image)
    assert deploy(api, app["id"])["status"] == "succeeded"
    return app


def test_the_router_serves_an_app_at_its_domains(
    stack: Stack,
    api: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    app_name: str,
) -> None:
    app = _deployed(api, app_name, HELLO_V1)
    other = _deployed(api, f"{app_name}-b", HELLO_V2)
    hostname = f"www.{app_name}.example.test"
    assert _add(api, app["id"], hostname).status_code == 201

    def page(host: str) -> httpx.Response:
        return httpx.get(stack.router_url + "/", headers={"Host": host}, timeout=10)

    # at once: the add answers after the router has the route
    assert page(hostname).text == "hello from v1\n"
    assert page(f"{app_name}.{stack.settings.apps_domain}").text == "hello from v1\n"
    # a deploy keeps the domain
    assert deploy(api, app["id"])["status"] == "succeeded"
    assert page(hostname).text == "hello from v1\n"

    # a removal the router cannot take now is done by the reconciler
    monkeypatch.setattr(get_settings(), "data_dir", tmp_path)
    routing.get_router.cache_clear()
    with TestClient(create_app(), headers=stack.admin_headers) as in_process:
        removed = in_process.delete(f"/apps/{app['id']}/domains/{hostname}")
    monkeypatch.undo()
    routing.get_router.cache_clear()
    assert removed.status_code == 503
    assert f"domain '{hostname}' is removed" in removed.json()["detail"]
    assert "reconciler" in removed.json()["detail"]
    assert _hostnames(api, app["id"]) == []
    eventually(
        lambda: page(hostname).status_code == 404,
        timeout=30,
        message="the reconciler did not take the removed domain off the router",
    )
    # and the name is free for another app
    assert _add(api, other["id"], hostname).status_code == 201
    assert page(hostname).text == "hello from v2\n"
    assert api.delete(f"/apps/{other['id']}/domains/{hostname}").status_code == 204
    assert page(hostname).status_code == 404


def test_listing_apps_reads_all_their_domains_in_one_query(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    for index in range(3):
        app = register_app(api, f"{app_name}-{index}", HELLO_V1)
        assert _add(api, app["id"], f"{index}.{app_name}.example.test").status_code == 201
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(str(args[2]))  # (conn, cursor, statement, ...)

    # Every engine's: GET requests read through the event loop's (async_read_engine)
    event.listen(Engine, "before_cursor_execute", record)
    try:
        with TestClient(create_app(), headers=stack.admin_headers) as in_process:
            listed = in_process.get("/apps", params={"limit": 500})
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert listed.status_code == 200
    assert sum(len(app["domains"]) for app in listed.json()) >= 3
    assert len([s for s in statements if "FROM app_domains" in s]) == 1, statements
