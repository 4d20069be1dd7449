"""Releases record what ran; a rollback runs that exact image again, by its digest."""

from __future__ import annotations

import docker
import httpx
import pytest

from tests.support.engine import local_container
from tests.support.flows import create_app, deploy, wait_for_deployment
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]


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
    container = local_container(done["container_id"])
    assert "SECRET=one" in container.attrs["Config"]["Env"]

    # and forward again to a chosen release
    forward = api.post(f"/apps/{app_id}/rollback", json={"release": 2})
    assert wait_for_deployment(api, app_id, forward.json()["id"])["status"] == "succeeded"
    assert router.get(f"/apps/{app_id}/").text == "hello from v2\n"
    assert api.post(f"/apps/{app_id}/rollback", json={"release": 99}).status_code == 404
    assert api.post(f"/apps/{app_id}/rollback", json={"release": 0}).status_code == 422
    client.images.remove(moving)


def test_images_of_old_releases_are_removed_and_rollback_says_so(
    stack: Stack, api: httpx.Client, app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minipaas.config import get_settings
    from minipaas.worker import reconciler
    from tests.support.builds import scratch_context, start_build, tar_bytes, wait_for_build

    # Only the platform's own images are collected: each release here is one of its builds
    monkeypatch.setattr(get_settings(), "keep_build_images", 1)
    keep = stack.settings.keep_release_images  # 2 in tests
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    image_ids, tags = [], []
    for number in range(1, keep + 2):
        body = tar_bytes(scratch_context(f"{app_name} release {number}\n"))
        answer = start_build(api, app_id, body)
        assert answer.status_code == 202, answer.text
        build = wait_for_build(api, app_id, answer.json()["number"])
        assert build["status"] == "succeeded" and build["deployment_id"], build["error"]
        deployed = wait_for_deployment(api, app_id, build["deployment_id"])
        assert deployed["status"] == "succeeded", deployed["error"]
        image_ids.append(deployed["image_id"])
        tags.append(build["image_tag"])
    client = docker.from_env()
    # release 1 is now older than the kept releases (and its build than the kept builds):
    # its image goes, even with its tag

    def gone(image_id: str) -> bool:
        reconciler._remove_old_release_images()  # what the worker's reconciler runs each pass
        try:
            client.images.get(image_id)
        except docker.errors.ImageNotFound:
            return True
        return False

    eventually(
        lambda: gone(image_ids[0]),
        timeout=20,
        interval=0.3,
        message="old release image not removed",
    )
    assert not gone(image_ids[-1]) and not gone(image_ids[-2])

    rollback = api.post(f"/apps/{app_id}/rollback", json={"release": 1})
    result = wait_for_deployment(api, app_id, rollback.json()["id"])
    assert result["status"] == "failed"
    assert "no longer on this host" in result["error"]
    # a rollback that fails leaves the app's settings as they were
    assert api.get(f"/apps/{app_id}").json()["image"] == tags[-1]
    assert api.delete(f"/apps/{app_id}").status_code == 204
    for tag in tags[1:]:
        client.images.remove(tag)
