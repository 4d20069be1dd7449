"""The images a Dockerfile builds on are read as Docker reads them, and held to the rules."""

from __future__ import annotations

import pytest

from minipaas.config import Settings
from minipaas.db.models import User, UserRole
from minipaas.services.builds.base_images import BaseImage, base_images, check_base_images
from minipaas.services.errors import InvalidRequest

MEMBER = User(id=7, username="member", role=UserRole.MEMBER, disabled=False)
ADMIN = User(id=1, username="admin", role=UserRole.ADMIN, disabled=False)


def test_from_and_copy_from_with_stages_args_and_continuations() -> None:
    text = (
        "# syntax comment\n"
        "ARG BASE=debian\n"
        "ARG TAG\n"
        "FROM --platform=linux/amd64 ${BASE}:${TAG:-bookworm} AS build\n"
        "RUN make\n"
        "FROM scratch\n"
        "COPY --from=build /out /\n"
        "COPY --from=0 /out /again\n"
        "COPY --chown=1:1 \\\n"
        "     --from=other/tools:1 /bin/tool /\n"
        "FROM build\n"
    )
    assert base_images(text, {}) == [
        BaseImage(4, "debian:bookworm"),
        BaseImage(9, "other/tools:1"),
    ]
    assert base_images(text, {"TAG": "trixie", "BASE": "mine"})[0].reference == "mine:trixie"


def test_a_name_that_cannot_be_worked_out_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="line 1: cannot tell which image"):
        base_images("FROM $$weird\n", {})


def _settings(allowed: str = "*") -> Settings:
    return Settings(instance_name="mp", allowed_images=allowed)


def test_a_member_may_not_build_on_another_apps_build() -> None:
    other = "FROM mp-builds/app-9:3\n"
    with pytest.raises(InvalidRequest, match="line 1: image 'mp-builds/app-9:3' is another"):
        check_base_images(_settings(), other, build_args={}, app_id=5, user=MEMBER)
    copied = "FROM scratch\nCOPY --from=mp-builds/app-9:3 /src /src\n"
    with pytest.raises(InvalidRequest, match="line 2"):
        check_base_images(_settings(), copied, build_args={}, app_id=5, user=MEMBER)
    # through a build arg too
    hidden = "ARG B=busybox\nFROM $B\n"
    with pytest.raises(InvalidRequest, match="line 2"):
        check_base_images(
            _settings(), hidden, build_args={"B": "mp-builds/app-9:3"}, app_id=5, user=MEMBER
        )
    # its own builds, and anything for an admin, are fine
    check_base_images(_settings(), "FROM mp-builds/app-5:2\n", build_args={}, app_id=5, user=MEMBER)
    check_base_images(_settings(), other, build_args={}, app_id=5, user=ADMIN)


def test_allowed_images_apply_to_base_images_and_ids_are_refused_to_members() -> None:
    with pytest.raises(InvalidRequest, match="not allowed here"):
        check_base_images(
            _settings("minipaas-base:*"), "FROM debian:12\n", build_args={}, app_id=5, user=MEMBER
        )
    check_base_images(
        _settings("minipaas-base:*"),
        "FROM minipaas-base:bookworm\n",
        build_args={},
        app_id=5,
        user=MEMBER,
    )
    by_id = "FROM sha256:" + "a" * 64 + "\n"
    with pytest.raises(InvalidRequest, match="by id"):
        check_base_images(_settings(), by_id, build_args={}, app_id=5, user=MEMBER)
