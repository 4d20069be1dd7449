"""Fuzzing of the whole OpenAPI schema with a valid admin token: no 5xx, nothing half-written.

The requests run in-process against the API app, which talks to the test platform's real
PostgreSQL, Redis and Docker engine; deploy and lifecycle jobs go to the real worker.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
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

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261127,  # reproducible; change it to explore other inputs
        "generation": {"max-examples": 20, "database": "none"},
        "phases": {"coverage": {"enabled": False}},
        "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
    }
)

schema = (
    schemathesis.openapi.from_asgi("/openapi.json", create_app(), config=CONFIG)
    # These two could lock the whole test session out (revoke the token in use, disable the
    # bootstrap admin); tests/integration/test_auth.py covers them
    .exclude(method="DELETE", path="/tokens/{token_id}")
    .exclude(method="PATCH", path="/users/{user_id}")
)


@pytest.fixture(scope="module")
def fuzzer(stack: Stack) -> Member:
    """An admin of its own, so fuzzing sees every route and can lock out nobody else."""
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=60) as api:
        return new_member(api, role="admin")


@schema.parametrize()
def test_no_server_errors(case: schemathesis.Case, fuzzer: Member) -> None:
    case.call_and_validate(headers=fuzzer.headers, checks=[not_a_server_error])


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
