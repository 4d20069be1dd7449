"""Releases record what ran; a rollback runs that exact image again, by its digest."""

from __future__ import annotations

import docker
import httpx
import pytest

from tests.support.flows import create_app, deploy, wait_for_deployment
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.deployments]


def test_releases_and_rollback_to_the_exact_image(
    stack: Stack, api: httpx.Client, router: httpx.Client, app_name: str
) -> None:
    client = docker.from_env()
    moving = f"minipaas-test/{app_name}:latest"  # a tag that will point elsewhere later
    client.images.get(HELLO_V1).tag(moving)
    app_id = create_app(api, app_name, moving, env={"SECRET": "one"})["id"]
    assert api.post(f"/apps/{app_id}/rollback").status_code == 409  # nothing to go back to

    first = deploy(api, app_id)
    assert first["status"] == "succeeded" and first["release_number"] == 1
    client.images.get(HELLO_V2).tag(moving)  # the tag moves on
    api.patch(f"/apps/{app_id}", json={"env": {"SECRET": "two", "EXTRA": "x"}, "memory_mb": 128})
    second = deploy(api, app_id)
    assert second["release_number"] == 2
    assert router.get(f"/apps/{app_id}/").text == "hello from v2\n"

    listed = api.get(f"/apps/{app_id}/releases").json()
    assert [r["number"] for r in listed] == [2, 1]
    assert listed[1]["image"] == moving and listed[1]["image_id"] == first["image_id"]
    assert listed[0]["image_id"] == second["image_id"] != first["image_id"]
    assert listed[0]["env"] == {"EXTRA": "********", "SECRET": "********"}
    assert (listed[0]["memory_mb"], listed[1]["memory_mb"]) == (128, 256)

    rollback = api.post(f"/apps/{app_id}/rollback")
    assert rollback.status_code == 202, rollback.text
    assert rollback.json()["rollback_to_release"] == 1
    done = wait_for_deployment(api, app_id, rollback.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    # release 1's image by digest, although the tag now names v2
    assert router.get(f"/apps/{app_id}/").text == "hello from v1\n"
    assert done["release_number"] == 3 and done["image_id"] == first["image_id"]
    app = api.get(f"/apps/{app_id}").json()
    assert app["memory_mb"] == 256 and app["env"] == {"SECRET": "********"}
    container = client.containers.get(done["container_id"])
    assert "SECRET=one" in container.attrs["Config"]["Env"]

    # and forward again to a chosen release
    forward = api.post(f"/apps/{app_id}/rollback", json={"release": 2})
    assert wait_for_deployment(api, app_id, forward.json()["id"])["status"] == "succeeded"
    assert router.get(f"/apps/{app_id}/").text == "hello from v2\n"
    assert api.post(f"/apps/{app_id}/rollback", json={"release": 99}).status_code == 404
    assert api.post(f"/apps/{app_id}/rollback", json={"release": 0}).status_code == 422
    client.images.remove(moving)
