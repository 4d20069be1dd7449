"""How built images are named: one repository per app, one tag per build."""

from __future__ import annotations

from minipaas.config import Settings
from minipaas.db.models import User
from minipaas.services.errors import InvalidRequest


def build_repository(settings: Settings, app_id: int) -> str:
    """Where an app's built images are tagged: one repository per app, one tag per build."""
    return f"{settings.instance_name.lower()}-builds/app-{app_id}"


def build_tag(settings: Settings, app_id: int, number: int) -> str:
    return f"{build_repository(settings, app_id)}:{number}"


def build_network(settings: Settings, build_id: int) -> str:
    """The network a build's steps run on, alone (runtime/builder.py)."""
    return f"{settings.instance_name.lower()}-build-{build_id}"


def build_id_of_network(settings: Settings, name: str) -> int | None:
    """The build whose network this is, by its name (None for another name)."""
    number = name.removeprefix(f"{settings.instance_name.lower()}-build-")
    return int(number) if number != name and number.isdigit() else None


# Names the engine reads as Docker Hub's, so "docker.io/x/y" is the local "x/y"
_DOCKER_HUB_PREFIXES = ("docker.io/", "index.docker.io/")


def engine_name(image: str) -> str:
    """The name as the engine looks it up locally: without a Docker Hub prefix."""
    lowered = image.lower()
    for prefix in _DOCKER_HUB_PREFIXES:
        if lowered.startswith(prefix):
            return image[len(prefix) :]
    return image


def is_own_build_image(settings: Settings, app_id: int, image: str) -> bool:
    """The image is one of this app's builds (ALLOWED_IMAGES does not apply to it)."""
    return engine_name(image).startswith(f"{build_repository(settings, app_id)}:")


def is_build_image(settings: Settings, image: str) -> bool:
    """Any app's build: another app may not name it (it holds that app's source), also
    not as docker.io/<its name>, which the engine finds on this host all the same."""
    return engine_name(image).startswith(f"{settings.instance_name.lower()}-builds/")


def check_not_a_build(settings: Settings, image: str, *, app_id: int | None, user: User) -> None:
    """Members may not run another app's build by naming its tag: it holds that app's source."""
    if user.is_admin or not is_build_image(settings, image):
        return
    if app_id is not None and is_own_build_image(settings, app_id, image):
        return
    raise InvalidRequest(
        f"image '{image}' is another app's build; build this app from its source instead "
        "(POST /apps/{id}/builds)",
        loc=("body", "image"),
    )
