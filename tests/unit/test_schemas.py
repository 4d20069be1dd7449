from __future__ import annotations

import pytest
from pydantic import ValidationError

from minipaas.api.schemas import AppCreate, AppUpdate

VALID = {"name": "web", "image": "nginx:1.27", "internal_port": 80}


def test_defaults() -> None:
    app = AppCreate.model_validate(VALID)
    assert app.env == {} and app.command is None and app.pull_policy == "if-not-present"


@pytest.mark.parametrize(
    "change",
    [
        {"internal_port": 0},
        {"internal_port": 65536},
        {"internal_port": "eighty"},
        {"pull_policy": "sometimes"},
        {"privileged": True},
        {"volumes": ["/:/host"]},
        {"name": None},
    ],
)
def test_bad_create_bodies_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AppCreate.model_validate({**VALID, **change})


def test_update_refuses_null_for_required_settings_but_allows_resetting_command() -> None:
    with pytest.raises(ValidationError, match="may not be null"):
        AppUpdate.model_validate({"image": None})
    update = AppUpdate.model_validate({"command": None})
    assert update.model_dump(exclude_unset=True) == {"command": None}
    with pytest.raises(ValidationError):
        AppUpdate.model_validate({"name": "renamed"})
