"""Open streams (followed logs, deployment events) end when their access does, end on a
deployment that already ended, and are capped per user across API processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from minipaas.config import get_settings
from minipaas.services import stream_guard
from tests.support.flows import create_app, deploy
from tests.support.images import HELLO_V1
from tests.support.stack import Stack
from tests.support.users import Member, new_member
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker]

# A stream must notice within one re-check interval (5 s by default) and a poll or two
ENDS_WITHIN = 15.0


@dataclass(frozen=True)
class OwnedApp:
    owner: Member
    app_id: int
    deployment_id: int


@pytest.fixture(scope="module")
def owned(stack: Stack) -> Iterator[OwnedApp]:
    """A member's running app: its logs and events are what the tests follow."""
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=60) as api:
        owner = new_member(api)
        with httpx.Client(base_url=stack.api_url, headers=owner.headers, timeout=60) as client:
            app_id = create_app(client, f"streams-{owner.id}", HELLO_V1)["id"]
            deployment = deploy(client, app_id)
            assert deployment["status"] == "succeeded", deployment
            yield OwnedApp(owner, app_id, deployment["id"])


def _client(stack: Stack, token: str) -> httpx.Client:
    timeout = httpx.Timeout(10, read=ENDS_WITHIN + 10)  # the old code never ends: a timeout
    return httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
    )


def _rest_of(lines: Iterator[str]) -> tuple[list[str], float]:
    """Every line until the server ends the stream, and how long that took."""
    started = time.monotonic()
    rest = list(lines)
    return rest, time.monotonic() - started


def test_followed_logs_end_when_the_token_is_revoked(
    stack: Stack, api: httpx.Client, owned: OwnedApp
) -> None:
    spare = api.post(f"/users/{owned.owner.id}/tokens", json={"name": "spare"}).json()
    with (
        _client(stack, spare["token"]) as client,
        client.stream("GET", f"/apps/{owned.app_id}/logs", params={"follow": "true"}) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines)  # the tail: the stream is live
        revoked = api.delete(f"/users/{owned.owner.id}/tokens/{spare['id']}")
        assert revoked.status_code == 200
        rest, took = _rest_of(lines)
    assert took < ENDS_WITHIN, took
    assert rest and rest[-1] == "# stream ended: the token was revoked", rest


def test_followed_logs_end_when_the_app_is_no_longer_visible(
    stack: Stack, api: httpx.Client, owned: OwnedApp
) -> None:
    """An admin reading a member's app loses it when demoted (ownership/role changes)."""
    other = new_member(api, role="admin")
    with (
        _client(stack, other.token) as client,
        client.stream("GET", f"/apps/{owned.app_id}/logs", params={"follow": "true"}) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines)
        assert api.patch(f"/users/{other.id}", json={"role": "member"}).status_code == 200
        rest, took = _rest_of(lines)
    assert took < ENDS_WITHIN, took
    assert rest[-1] == "# stream ended: the app was deleted or is no longer yours", rest


def test_event_stream_ends_when_the_user_is_disabled(stack: Stack, api: httpx.Client) -> None:
    member = new_member(api)
    with _client(stack, member.token) as client:
        # Healthy only after running 30 s: the deployment is still waiting when the stream ends
        app_id = create_app(
            client, f"never-ready-{member.id}", HELLO_V1, health_check_running_seconds=30
        )["id"]
        deployment_id = client.post(f"/apps/{app_id}/deploy").json()["id"]
        events = f"/apps/{app_id}/deployments/{deployment_id}/events"
        with client.stream("GET", events, params={"follow": "true"}) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines).startswith("id: ")  # the first event: the stream is live
            assert api.patch(f"/users/{member.id}", json={"disabled": True}).status_code == 200
            rest, took = _rest_of(lines)
    assert took < ENDS_WITHIN, took
    kinds = [line.removeprefix("event: ") for line in rest if line.startswith("event: ")]
    assert kinds[-1] == "closed", rest
    assert "failed" not in kinds  # it ended for the user, not with the deployment
    assert '"reason": "the user was disabled"' in rest[rest.index("event: closed") + 1]


def test_event_stream_of_an_ended_deployment_ends(stack: Stack, owned: OwnedApp) -> None:
    events = f"/apps/{owned.app_id}/deployments/{owned.deployment_id}/events"
    with _client(stack, owned.owner.token) as client:
        last = client.get(events).json()[-1]["id"]
        for after in (last, last + 1000):  # nothing more will come: ends at once
            started = time.monotonic()
            with client.stream(
                "GET", events, params={"follow": "true", "after": after}, timeout=10
            ) as stream:
                assert stream.status_code == 200
                assert list(stream.iter_lines()) == []
            assert time.monotonic() - started < 5
        # from the start: every event once, ending with the outcome as before
        with client.stream("GET", events, params={"follow": "true"}, timeout=10) as stream:
            kinds = [
                line.removeprefix("event: ")
                for line in stream.iter_lines()
                if line.startswith("event: ")
            ]
        assert kinds[-1] == "succeeded", kinds


def test_open_streams_are_capped_per_user(stack: Stack, owned: OwnedApp) -> None:
    cap = stack.settings.user_max_streams
    path = f"/apps/{owned.app_id}/logs"
    with _client(stack, owned.owner.token) as client, ExitStack() as streams:
        opened = [
            streams.enter_context(client.stream("GET", path, params={"follow": "true"}))
            for _ in range(cap)
        ]
        assert [s.status_code for s in opened] == [200] * cap
        # counted in Redis, where every API process sees the same number
        assert stream_guard.open_streams(owned.owner.id) == cap
        refused = client.get(path, params={"follow": "true"})
        assert refused.status_code == 429
        assert "USER_MAX_STREAMS" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        events = f"/apps/{owned.app_id}/deployments/{owned.deployment_id}/events"
        assert client.get(events, params={"follow": "true"}).status_code == 429
        # the same user's other requests still work
        assert client.get(path).status_code == 200
        opened[0].close()

        def slot_freed() -> bool:
            return stream_guard.open_streams(owned.owner.id) == cap - 1

        eventually(slot_freed, timeout=10, message="a closed stream kept its slot")
        with client.stream("GET", path, params={"follow": "true"}) as again:
            assert again.status_code == 200
    eventually(
        lambda: stream_guard.open_streams(owned.owner.id) == 0,
        timeout=10,
        message="closed streams kept their slots",
    )


def test_a_slot_whose_process_died_expires(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slot is a lease: never renewed (its API process was killed), it frees itself."""
    monkeypatch.setattr(get_settings(), "user_max_streams", 1)
    user_id = 2**31 - 7  # no such user: a key of its own
    assert stream_guard._take_slot(user_id, lease=0.5) is not None
    assert stream_guard._take_slot(user_id, lease=0.5) is None  # at the cap
    time.sleep(0.7)
    assert stream_guard._take_slot(user_id, lease=30) is not None
    assert stream_guard.open_streams(user_id) == 1
