"""The OpenAPI description is a contract: valid, complete about errors, enough to drive the real
platform with a client built from it alone, and the same set of routes as the README's table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from minipaas.api.app import create_app
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import new_member
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker]

README = Path(__file__).resolve().parents[2] / "README.md"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    """The description as the running platform serves it."""
    answer = httpx.get(f"{stack.api_url}/openapi.json", timeout=30)
    assert answer.status_code == 200, answer.text
    served: dict[str, Any] = answer.json()
    return served


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_description_is_valid_and_stable(document: dict[str, Any]) -> None:
    validate(document)  # raises with the offending part when it is not valid OpenAPI
    assert document == create_app().openapi()  # what is served is what the code describes
    # Links name operations by id: a renamed route function must not leave one dangling
    operation_ids = {operation["operationId"] for _, _, operation in _operations(document)}
    links = [
        link
        for _, _, operation in _operations(document)
        for answer in operation["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert links and {link["operationId"] for link in links} <= operation_ids


def test_every_error_has_one_shape(document: dict[str, Any]) -> None:
    """Every authenticated route lists 401, 422, 429 and 503; every error body is ErrorOut,
    every 422 ValidationErrorOut; a route that reads a body lists its 400."""
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        where = f"{method} {path}"
        if not path.startswith("/health"):
            assert {"401", "422", "429", "503"} <= set(responses), where
        if "requestBody" in operation:
            assert "400" in responses, where
        for status, answer in responses.items():
            if int(status) < 400 or path.startswith("/health"):
                continue
            expected = "ValidationErrorOut" if status == "422" else "ErrorOut"
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (where, status)


def _readme_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route in the README's API table; `{id}`-style names are
    compared as placeholders, and "`POST /apps/{id}/stop`, `/start`" names two routes."""
    text = README.read_text()
    table = text.split("### The API", 1)[1].split("\n\n", 2)[1]
    routes: set[tuple[str, str]] = set()
    for row in table.splitlines()[2:]:
        cell = re.sub(r"\([^)]*\)", "", row.split(" | ")[0])  # "(also `/db-health`)": an alias
        method = parent = ""
        for token in re.findall(r"`([^`]+)`", cell):
            named = re.match(r"(GET|POST|PUT|PATCH|DELETE) (/\S*)", token)
            if named:
                method, path = named.group(1), named.group(2).split("?")[0]
                parent = path.rsplit("/", 1)[0]
            elif re.fullmatch(r"/[\w-]+", token) and method:
                path = parent + token  # a sibling of the route before it
            else:
                continue
            routes.add((method, _placeholders(path)))
    return routes


def _placeholders(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_the_readme_table_and_the_description_agree(document: dict[str, Any]) -> None:
    described = {(method, _placeholders(path)) for method, path, _ in _operations(document)}
    in_readme = _readme_routes()
    assert described - in_readme == set(), "in the description, missing from the README's table"
    assert in_readme - described == set(), "in the README's table, missing from the description"


class DescribedClient:
    """A client that knows only the description: it finds each call by its operationId and
    checks every answer against the schema the description gives for that status."""

    def __init__(self, document: dict[str, Any], http: httpx.Client) -> None:
        self.http = http
        self.by_id = {op["operationId"]: (m, p, op) for m, p, op in _operations(document)}
        self.registry: Registry[Any] = Registry().with_resource(
            "urn:api", Resource.from_contents(document, default_specification=DRAFT202012)
        )

    def call(self, operation_id: str, body: Any = None, **path: Any) -> tuple[int, Any]:
        method, template, operation = self.by_id[operation_id]
        answer = self.http.request(method, template.format(**path), json=body)
        documented = operation["responses"].get(str(answer.status_code))
        assert documented is not None, (operation_id, answer.status_code, answer.text)
        if answer.status_code == 204:
            return 204, None
        content = answer.headers["content-type"].split(";")[0]
        assert content in documented["content"], (operation_id, content)
        schema = {"$ref": "urn:api#" + documented["content"][content]["schema"]["$ref"][1:]}
        OAS31Validator(schema, registry=self.registry).validate(answer.json())
        return answer.status_code, answer.json()


def test_a_client_built_from_the_description_drives_the_platform(
    stack: Stack, document: dict[str, Any], api: httpx.Client, app_name: str
) -> None:
    member = new_member(api)
    with httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=60) as http:
        client = DescribedClient(document, http)
        status, app = client.call(
            "create_app_apps_post", {"name": app_name, "image": HELLO_V1, "internal_port": 80}
        )
        assert status == 201
        status, queued = client.call("deploy_app_apps__app_id__deploy_post", app_id=app["id"])
        assert status == 202

        def deployed() -> bool:
            _, deployment = client.call(
                "get_deployment_apps__app_id__deployments__deployment_id__get",
                app_id=app["id"],
                deployment_id=queued["id"],
            )
            return bool(deployment["status"] == "succeeded")

        eventually(deployed, timeout=120, interval=0.5, message="the deployment never succeeded")
        # The platform's own rules refuse in request validation's shape, naming the field
        status, refused = client.call(
            "update_app_apps__app_id__patch",
            {"pids": stack.settings.max_pids + 1},
            app_id=app["id"],
        )
        assert status == 422
        assert [error["loc"] for error in refused["detail"]] == [["body", "pids"]], refused
        status, _ = client.call("get_app_apps__app_id__get", app_id=app["id"] + 10**6)
        assert status == 404
        status, _ = client.call("list_users_users_get")
        assert status == 403
        status, _ = client.call("delete_app_apps__app_id__delete", app_id=app["id"])
        assert status in (202, 204)
