"""The first admin: created on first start, its token kept where only root can read it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from minipaas.config import Settings
from minipaas.db.session import get_session
from minipaas.services import users


@dataclass(frozen=True)
class AdminCredentials:
    username: str
    created: bool
    token_file: Path | None  # where the token is, when we generated it
    from_env: bool


def ensure_admin(settings: Settings) -> AdminCredentials:
    wanted = settings.admin_token.get_secret_value() if settings.admin_token else None
    with get_session() as db:
        result = users.bootstrap_admin(db=db, token=wanted)
    token_file = settings.admin_token_file
    if result.created and result.token and wanted is None:
        token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(result.token + "\n")
    return AdminCredentials(
        username=result.username,
        created=result.created,
        token_file=token_file if token_file.exists() else None,
        from_env=wanted is not None,
    )
