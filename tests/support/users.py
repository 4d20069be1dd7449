"""Users and tokens for tests, made through the API as an admin would."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Member:
    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_member(admin_api: httpx.Client, role: str = "member") -> Member:
    """A user with a token; an admin is made a member first (admins may not mint tokens for
    other admins), then promoted: the token dies if the promoting admin loses their role."""
    username = f"user-{secrets.token_hex(4)}"
    created = admin_api.post("/users", json={"username": username, "role": "member"})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    issued = admin_api.post(f"/users/{user_id}/tokens", json={"name": "tests"})
    assert issued.status_code == 201, issued.text
    if role != "member":
        promoted = admin_api.patch(f"/users/{user_id}", json={"role": role})
        assert promoted.status_code == 200, promoted.text
    return Member(id=user_id, username=username, token=issued.json()["token"])
