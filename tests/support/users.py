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
    username = f"user-{secrets.token_hex(4)}"
    created = admin_api.post("/users", json={"username": username, "role": role})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    issued = admin_api.post(f"/users/{user_id}/tokens", json={"name": "tests"})
    assert issued.status_code == 201, issued.text
    return Member(id=user_id, username=username, token=issued.json()["token"])
