"""Fairness: a member's deployments get DEPLOYS_PER_MEMBER workers (1 with the test stack's
settings); the rest wait in PostgreSQL with their place shown, and another user's deploy
starts on a free worker meanwhile."""

from __future__ import annotations

import itertools
from datetime import datetime

import httpx
import pytest

from tests.support.flows import create_app, deploy, wait_for_deployment
from tests.support.images import HELLO_V1, SLOW_STARTER
from tests.support.stack import Stack
from tests.support.users import new_member

# alone: it times which deploys start first, which a second session's load shifts
pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.alone]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_members_deploys_wait_their_turn_while_others_go_on(
    stack: Stack, second_worker: None, api: httpx.Client, app_name: str
) -> None:
    member = new_member(api)
    with httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=30) as mine:
        slow = [
            create_app(mine, f"{app_name}-{n}", SLOW_STARTER, memory_mb=64)["id"] for n in range(3)
        ]
        asked = [mine.post(f"/apps/{app}/deploy") for app in slow]
        assert all(r.status_code == 202 for r in asked), [r.text for r in asked]
        first, *waiting = [r.json() for r in asked]
        assert first["queue_position"] is None and first["dispatched_at"] is not None
        assert [d["queue_position"] for d in waiting] == [1, 2]
        assert all(d["dispatched_at"] is None for d in waiting)
        events = mine.get(f"/apps/{slow[2]}/deployments/{waiting[1]['id']}/events").json()
        assert any(e["kind"] == "waiting" and "position 2" in e["message"] for e in events)

        # The admin's deploy takes the other worker while the member's first still runs
        admin_app = create_app(api, f"{app_name}-admin", HELLO_V1)["id"]
        admin = deploy(api, admin_app)
        assert admin["status"] == "succeeded"
        first_now = mine.get(f"/apps/{slow[0]}/deployments/{first['id']}").json()
        assert first_now["finished_at"] is None or _at(admin["finished_at"]) <= _at(
            first_now["finished_at"]
        )
        assert admin["dispatched_at"] is not None

        ended = [
            wait_for_deployment(mine, app, d["id"], timeout=120)
            for app, d in zip(slow, [first, *waiting], strict=True)
        ]
    assert [d["status"] for d in ended] == ["succeeded"] * 3
    # one slot: the member's deploys ran one after the other, in the order asked
    for before, after in itertools.pairwise(ended):
        assert _at(after["started_at"]) >= _at(before["finished_at"]), (before, after)
    assert all(d["queue_position"] is None for d in ended)


def test_cancelling_a_waiting_deployment_moves_the_line(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    member = new_member(api)
    with httpx.Client(base_url=stack.api_url, headers=member.headers, timeout=30) as mine:
        apps = [
            create_app(mine, f"{app_name}-{n}", SLOW_STARTER, memory_mb=64)["id"] for n in range(3)
        ]
        deployments = [mine.post(f"/apps/{app}/deploy").json() for app in apps]
        assert [d["queue_position"] for d in deployments] == [None, 1, 2]
        cancelled = mine.post(f"/apps/{apps[1]}/deployments/{deployments[1]['id']}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["status"] == "failed"
        last = mine.get(f"/apps/{apps[2]}/deployments/{deployments[2]['id']}").json()
        assert last["queue_position"] in (None, 1)  # next in line (or already dispatched)
        ended = wait_for_deployment(mine, apps[2], deployments[2]["id"], timeout=120)
        assert ended["status"] == "succeeded"
        assert api.get(f"/apps/{apps[1]}").json()["status"] == "created"
