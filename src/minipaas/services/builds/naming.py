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


def build_key(settings: Settings, build_id: int) -> str:
    """Names a build's networks (their label, and the start of their names)."""
    return f"{settings.instance_name.lower()}-build-{build_id}"


def build_id_of_key(settings: Settings, key: str) -> int | None:
    """The build a build_key names (None for another key)."""
    number = key.removeprefix(f"{settings.instance_name.lower()}-build-")
    return int(number) if number != key and number.isdigit() else None


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
    not as docker.io/<its name>, which the engine finds on this host all the same; nor
    any app's image as the platform pushed it for Swarm (is_cluster_copy)."""
    name = engine_name(image)
    return name.startswith(f"{settings.instance_name.lower()}-builds/") or is_cluster_copy(
        settings, name
    )


def is_cluster_copy(settings: Settings, image: str) -> bool:
    """`<registry>/<INSTANCE_NAME>/app-<id>...`: an app's image (a build's too) in the
    cluster's registry (runtime/registry.py), under any name of any registry host, which
    the platform pulls with its own login."""
    first, _, rest = image.partition("/")
    from_a_registry = "." in first or ":" in first or first.lower() == "localhost"
    return from_a_registry and rest.lower().startswith(f"{settings.instance_name.lower()}/app-")


def check_not_a_build(settings: Settings, image: str, *, app_id: int | None, user: User) -> None:
    """Members may not run another app's build by naming its tag: it holds that app's source."""
    if user.is_admin or not is_build_image(settings, image):
        return
    if app_id is not None and is_own_build_image(settings, app_id, image):
        return
    raise InvalidRequest(
        f"image '{image}' is another app's build (or the platform's copy of an app's image for "
        "the cluster); build this app from its source instead (POST /apps/{id}/builds)",
        loc=("body", "image"),
    )
