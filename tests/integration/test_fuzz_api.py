"""Fuzzing of the whole OpenAPI description, as an admin and as a member: no 5xx, every answer
(status, content type, body) as the description says, and nothing half-written.

The requests run in-process against the API app, which talks to the test platform's real
PostgreSQL, Redis and Docker engine; deploy and lifecycle jobs go to the real worker.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Response
from sqlalchemy import select

from minipaas.api.app import create_app
from minipaas.db.models import ACTIVE_DEPLOYMENT_STATUSES, App, AppStatus, Deployment
from minipaas.db.session import get_session
from minipaas.runtime import get_runtime
from tests.support.flows import create_app as create_test_app
from tests.support.flows import wait_for_deployment
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import Member, new_member
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker]

# Every answer must be one the description promises: a client generated from it meets no surprise
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261127,  # reproducible; change it to explore other inputs
        "generation": {"max-examples": 15, "database": "none"},
        "phases": {"coverage": {"enabled": False}},
        "checks": {"enabled": False, **{check: {"enabled": True} for check in CHECKS}},
    }
)

schema = (
    schemathesis.openapi.from_asgi("/openapi.json", create_app(), config=CONFIG)
    # These two could lock the whole test session out (revoke the token in use, disable the
    # bootstrap admin); tests/integration/test_auth.py covers them
    .exclude(method="DELETE", path="/tokens/{token_id}")
    .exclude(method="PATCH", path="/users/{user_id}")
)


@pytest.fixture(scope="module", params=["admin", "member"])
def fuzzer(request: pytest.FixtureRequest, stack: Stack) -> Member:
    """A user of its own per role, so fuzzing can lock out nobody else; an admin sees every
    route, a member meets the 403s and 404s of what is not theirs."""
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=60) as api:
        return new_member(api, role=request.param)


@schema.parametrize()
def test_every_answer_is_in_the_description(case: schemathesis.Case, fuzzer: Member) -> None:
    case.call_and_validate(headers=fuzzer.headers)


def _linked_parameters(link: dict[str, Any], case: schemathesis.Case, body: Any) -> dict[str, Any]:
    """A link's parameters, from the answer's body or the request's path."""
    values: dict[str, Any] = {}
    for name, expression in link["parameters"].items():
        if expression.startswith("$response.body#/"):
            values[name] = body[expression.removeprefix("$response.body#/")]
        else:
            values[name] = case.path_parameters[expression.removeprefix("$request.path.")]
    return values


def _follow(
    case: schemathesis.Case, response: Response, link_name: str, headers: dict[str, str]
) -> tuple[schemathesis.Case, Response]:
    """Call the operation the answer's link names, checked like the fuzzing's calls."""
    documented = case.operation.definition.raw["responses"][str(response.status_code)]
    link = documented["links"][link_name]
    operation = schema.find_operation_by_id(link["operationId"])
    parameters = _linked_parameters(link, case, response.json())
    linked = operation.Case(path_parameters=parameters)
    return linked, linked.call_and_validate(headers=headers)


def test_the_description_links_lead_from_an_app_to_its_deployment(fuzzer: Member) -> None:
    """Create an app, then follow the links the description gives: create -> deploy ->
    the deployment and its events, each answer checked like the fuzzing's.

    A fixed walk, not schemathesis' random state machine: against a platform whose state
    moves on, Hypothesis' replays of that machine failed as FlakyStrategyDefinition."""
    create = schema["/apps"]["POST"].Case(
        body={"name": f"flow-{secrets.token_hex(4)}", "image": HELLO_V1, "internal_port": 80},
        media_type="application/json",
    )
    created = create.call_and_validate(headers=fuzzer.headers)
    assert created.status_code == 201, created.text
    deploy, queued = _follow(create, created, "deploy_app", fuzzer.headers)
    assert queued.status_code == 202, queued.text
    for link_name in ("get_deployment", "deployment_events"):
        _, answer = _follow(deploy, queued, link_name, fuzzer.headers)
        assert answer.status_code == 200, (link_name, answer.text)


def test_fuzzing_left_nothing_half_written(
    stack: Stack, fuzzer: Member, api: httpx.Client, app_name: str
) -> None:
    """Runs after the fuzzing: every deployment ends, app states match the engine."""

    def no_deployment_active() -> bool:
        with get_session() as db:
            active = db.scalars(
                select(Deployment).where(Deployment.status.in_(ACTIVE_DEPLOYMENT_STATUSES))
            ).all()
        assert not active, [(d.id, d.status) for d in active]
        return True

    eventually(
        no_deployment_active,
        timeout=120,
        interval=0.5,
        retry_on=(AssertionError,),
        message="deployments still active after the fuzzing",
    )
    # A lifecycle action or delete that answered 202 (ACTION_WAIT_SECONDS passed) may still be
    # queued or running, and would be caught half-way. The one worker takes jobs first in,
    # first out: a deployment queued now ends only after every job queued before it has run.
    barrier = create_test_app(api, app_name, HELLO_V1)["id"]
    queued = api.post(f"/apps/{barrier}/deploy")
    assert queued.status_code == 202, queued.text
    wait_for_deployment(api, barrier, queued.json()["id"], timeout=180)
    runtime = get_runtime()
    with get_session() as db:
        for app in db.scalars(select(App)).all():
            assert app.status is not AppStatus.DEPLOYING, app.id
            if app.container_id is not None:
                state = runtime.state(app.container_id)
                assert state is not None, f"app {app.id} points at a missing container"
                if app.status is AppStatus.RUNNING:
                    assert state.running, f"app {app.id} is 'running' but its container is not"
    assert api.delete(f"/apps/{barrier}").status_code in (202, 204)
