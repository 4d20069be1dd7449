"""ADMIN_TOKEN must look like a platform token: the router strips only `Bearer mp_...`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from minipaas.config import Settings


@pytest.mark.parametrize(
    "token",
    [
        "x" * 40,  # long enough but no prefix: would reach apps through the router
        "Bearer-" + "x" * 40,
        "mp_short",  # prefix but guessable
        "mp_" + "x" * 28,  # 31 characters
    ],
)
def test_admin_token_without_prefix_or_too_short_is_refused(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", token)
    with pytest.raises(ValidationError, match="ADMIN_TOKEN must start with 'mp_'"):
        Settings(_env_file=None)


def test_admin_token_of_the_platform_shape_is_kept_and_empty_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "mp_" + "a" * 29  # exactly 32 characters
    monkeypatch.setenv("ADMIN_TOKEN", token)
    configured = Settings(_env_file=None)
    assert configured.admin_token is not None
    assert configured.admin_token.get_secret_value() == token
    monkeypatch.setenv("ADMIN_TOKEN", "")
    assert Settings(_env_file=None).admin_token is None
