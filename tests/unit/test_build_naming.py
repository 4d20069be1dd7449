"""Which image references a member may not run: any app's build, under any of its names."""

from __future__ import annotations

import pytest

from minipaas.config import Settings
from minipaas.db.models import User, UserRole
from minipaas.services.builds.naming import check_not_a_build, is_build_image
from minipaas.services.errors import InvalidRequest

SETTINGS = Settings(instance_name="mp")
MEMBER = User(id=7, username="member", role=UserRole.MEMBER, disabled=False)
ADMIN = User(id=1, username="admin", role=UserRole.ADMIN, disabled=False)


@pytest.mark.parametrize(
    "image",
    [
        "mp-builds/app-3:1",
        "docker.io/mp-builds/app-3:1",
        # The copies the platform pushes for Swarm, under any name of the registry
        "127.0.0.1:5000/mp/app-3:id-0123456789abcdef0123456789abcdef",
        "localhost:5000/mp/app-3@sha256:" + "a" * 64,
        "registry.example.com/MP/app-3:id-0123",
    ],
)
def test_builds_and_cluster_copies_are_refused_to_members_only(image: str) -> None:
    assert is_build_image(SETTINGS, image)
    with pytest.raises(InvalidRequest, match="another app's build"):
        check_not_a_build(SETTINGS, image, app_id=9, user=MEMBER)
    check_not_a_build(SETTINGS, image, app_id=9, user=ADMIN)


@pytest.mark.parametrize(
    "image", ["nginx:1.27", "mp/app-3:1", "registry.example.com/other/app-3:1", "mp-app-3:1"]
)
def test_other_images_are_not_builds(image: str) -> None:
    assert not is_build_image(SETTINGS, image)
