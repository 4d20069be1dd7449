"""Who issued a token, and what that means: tokens die with their issuer's standing; no admin
mints for another; tokens per user are capped and listed in pages; the last admins cannot
demote each other at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from minipaas.db.models import ApiToken, User, UserRole
from minipaas.db.session import get_session
from minipaas.services import users
from minipaas.services.errors import ServiceError
from tests.support.stack import Stack
from tests.support.users import Member, new_member

pytestmark = [pytest.mark.docker]


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=60) as plain:
        yield plain


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _works(client: httpx.Client, token: str) -> bool:
    status = client.get("/me", headers=_bearer(token)).status_code
    assert status in (200, 401), status
    return status == 200


def test_no_admin_mints_a_token_for_another_admin(client: httpx.Client, api: httpx.Client) -> None:
    other = new_member(api, role="admin")
    refused = api.post(f"/users/{other.id}/tokens", json={"name": "impersonate"})
    assert refused.status_code == 403, refused.text
    assert "POST /tokens" in refused.json()["detail"]
    # their own tokens they make themselves; and an admin may mint for themselves here too
    own = client.post("/tokens", json={"name": "own"}, headers=other.headers)
    assert own.status_code == 201
    assert client.post(
        f"/users/{other.id}/tokens", json={"name": "self"}, headers=other.headers
    ).is_success


def test_tokens_an_admin_minted_for_others_die_with_their_standing(
    client: httpx.Client, api: httpx.Client
) -> None:
    issuer = new_member(api, role="admin")
    as_issuer = httpx.Client(base_url=str(api.base_url), headers=issuer.headers, timeout=60)
    with as_issuer:
        member = new_member(as_issuer)  # its token: minted by `issuer`
        with get_session() as db:
            record = db.scalar(select(ApiToken).where(ApiToken.user_id == member.id))
            assert record is not None and record.issued_by_id == issuer.id
        # swapped for one the member makes with it: the same issuer, not a way out
        child = client.post("/tokens", json={"name": "child"}, headers=member.headers).json()
        issuer_own = client.post("/tokens", json={"name": "mine"}, headers=issuer.headers).json()
    # the same member's token from another admin is not touched
    spare = api.post(f"/users/{member.id}/tokens", json={"name": "spare"}).json()
    assert all(_works(client, t) for t in (member.token, child["token"], spare["token"]))

    assert api.patch(f"/users/{issuer.id}", json={"disabled": True}).status_code == 200
    assert not _works(client, member.token) and not _works(client, child["token"])
    assert _works(client, spare["token"])
    # enabled again: their own tokens work again, what they minted for others stays revoked
    assert api.patch(f"/users/{issuer.id}", json={"disabled": False}).status_code == 200
    assert _works(client, issuer.token) and _works(client, issuer_own["token"])
    assert not _works(client, member.token)

    # demoted: the same
    fresh = client.post(
        f"/users/{member.id}/tokens", json={"name": "again"}, headers=issuer.headers
    ).json()
    assert _works(client, fresh["token"])
    assert api.patch(f"/users/{issuer.id}", json={"role": "member"}).status_code == 200
    assert not _works(client, fresh["token"]) and _works(client, issuer.token)


def test_a_stale_admin_cannot_mint(client: httpx.Client, api: httpx.Client) -> None:
    """Minting and disabling at once: the mint re-checks its issuer under the same lock."""
    issuer = new_member(api, role="admin")
    member = new_member(api)
    with get_session() as db:
        stale = db.get(User, issuer.id)
        assert stale is not None
        db.expunge(stale)  # as the request authenticated it, before the disabling
    assert api.patch(f"/users/{issuer.id}", json={"disabled": True}).status_code == 200
    with get_session() as db, pytest.raises(ServiceError) as refused:
        users.issue_token_for(
            db=db,
            admin=stale,
            user_id=member.id,
            name="late",
            expires_in_days=None,
            parent_token=issuer.token,
        )
    assert refused.value.status_code == 403


def test_tokens_per_user_are_capped_and_listed_in_pages(
    stack: Stack, client: httpx.Client, api: httpx.Client
) -> None:
    cap = stack.settings.user_max_tokens
    member = new_member(api)
    made = [
        client.post("/tokens", json={"name": f"t{n}"}, headers=member.headers)
        for n in range(cap - 1)
    ]
    assert all(r.status_code == 201 for r in made)
    over = client.post("/tokens", json={"name": "one-too-many"}, headers=member.headers)
    assert over.status_code == 409, over.text
    assert "USER_MAX_TOKENS" in over.json()["detail"] and str(cap) in over.json()["detail"]
    assert api.post(f"/users/{member.id}/tokens", json={"name": "x"}).status_code == 409
    # a revoked token frees its place
    last = made[-1].json()["id"]
    assert client.delete(f"/tokens/{last}", headers=member.headers).status_code == 200
    assert client.post("/tokens", json={"name": "again"}, headers=member.headers).status_code == 201

    page = client.get("/tokens", params={"limit": 10, "offset": 5}, headers=member.headers)
    assert page.status_code == 200
    assert int(page.headers["x-total-count"]) == cap + 1  # revoked ones are listed too
    names = [t["name"] for t in page.json()]
    assert names == [f"t{n}" for n in range(4, 14)]
    by_admin = api.get(f"/users/{member.id}/tokens", params={"limit": 3})
    assert [t["name"] for t in by_admin.json()] == ["tests", "t0", "t1"]
    assert by_admin.headers["x-total-count"] == str(cap + 1)
    assert client.get("/tokens", params={"limit": 501}, headers=member.headers).status_code == 422


def _admins(api: httpx.Client) -> tuple[Member, Member]:
    return new_member(api, role="admin"), new_member(api, role="admin")


def test_two_admins_demoting_each_other_at_once_leave_one(api: httpx.Client) -> None:
    """Each request authenticated its admin before the other's change committed: without a
    lock both demotions pass their checks and neither is an admin afterwards."""
    first, second = _admins(api)
    with get_session() as db:
        actors = {
            user.id: user
            for user in db.scalars(select(User).where(User.id.in_([first.id, second.id])))
        }
        for user in actors.values():
            db.expunge(user)
    start = threading.Barrier(2)
    outcomes: dict[int, int] = {}

    def demote(actor_id: int, target_id: int) -> None:
        with get_session() as db:
            start.wait()
            try:
                users.update_user(
                    db=db,
                    actor=actors[actor_id],
                    user_id=target_id,
                    disabled=None,
                    role=UserRole.MEMBER,
                )
                outcomes[actor_id] = 200
            except ServiceError as exc:
                outcomes[actor_id] = exc.status_code

    threads = [
        threading.Thread(target=demote, args=(first.id, second.id)),
        threading.Thread(target=demote, args=(second.id, first.id)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes.values()) == [200, 403], outcomes
    with get_session() as db:
        roles = db.scalars(select(User.role).where(User.id.in_([first.id, second.id]))).all()
    assert sorted(roles) == [UserRole.ADMIN, UserRole.MEMBER]


def test_two_admins_disabling_each_other_through_the_api(
    client: httpx.Client, api: httpx.Client
) -> None:
    first, second = _admins(api)
    results: dict[str, int] = {}
    start = threading.Barrier(2)

    def disable(actor: Member, target: Member) -> None:
        start.wait()
        response = client.patch(
            f"/users/{target.id}", json={"disabled": True}, headers=actor.headers
        )
        results[actor.username] = response.status_code

    threads = [
        threading.Thread(target=disable, args=(first, second)),
        threading.Thread(target=disable, args=(second, first)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # one wins; the other is refused (its admin is disabled by then: 401 or 403)
    assert sorted(results.values())[0] == 200 and sorted(results.values())[1] in (401, 403)
    standing = [_works(client, first.token), _works(client, second.token)]
    assert sorted(standing) == [False, True]


def test_an_admin_cannot_revoke_the_token_they_act_with(
    stack: Stack, client: httpx.Client, api: httpx.Client
) -> None:
    """Found live: bob, whose token carol minted before promoting him, disabled carol: 200,
    and his own token went with her standing; with two admins, nobody could log in to undo
    it. The change is refused, saying why; an admin whose token does not rest on carol may."""
    carol = new_member(api, role="admin")
    with httpx.Client(base_url=stack.api_url, headers=carol.headers, timeout=60) as as_carol:
        bob = new_member(as_carol, role="admin")
    for change in ({"disabled": True}, {"role": "member"}):
        refused = client.patch(f"/users/{carol.id}", json=change, headers=bob.headers)
        assert refused.status_code == 409, refused.text
        assert f"rests on {carol.username}" in refused.json()["detail"]
    assert _works(client, bob.token) and _works(client, carol.token)
    assert api.patch(f"/users/{carol.id}", json={"disabled": True}).status_code == 200
    assert not _works(client, bob.token)  # it rested on carol, as before
