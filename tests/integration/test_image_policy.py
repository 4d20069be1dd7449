"""ALLOWED_IMAGES holds at deploy and rollback too, and members may not run images by id."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from minipaas.api.app import create_app
from minipaas.config import get_settings
from tests.support.flows import create_app as register_app
from tests.support.flows import deploy
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack
from tests.support.users import new_member

pytestmark = [pytest.mark.docker]

FULL_ID = "sha256:" + "ab" * 32
SHORT_ID = "0123456789ab"


def test_deploy_and_rollback_check_todays_image_policy(
    stack: Stack, api: httpx.Client, monkeypatch: pytest.MonkeyPatch, app_name: str
) -> None:
    app = register_app(api, app_name, HELLO_V1)
    assert deploy(api, app["id"])["status"] == "succeeded"  # release 1 ran HELLO_V1
    assert api.patch(f"/apps/{app['id']}", json={"image": HELLO_V2}).status_code == 200
    before = api.get(f"/apps/{app['id']}/deployments").json()

    with TestClient(create_app(), headers=stack.admin_headers) as client:
        # the release's reference is checked, not the app's (HELLO_V2 is allowed)
        monkeypatch.setattr(get_settings(), "allowed_images", HELLO_V2)
        rollback = client.post(f"/apps/{app['id']}/rollback", json={"release": 1})
        assert rollback.status_code == 422, rollback.text
        # the release's image is not in the request: no field is at fault
        assert rollback.json()["detail"] == [
            {
                "loc": [],
                "msg": f"image '{HELLO_V1}' is not allowed here: "
                f"ALLOWED_IMAGES permits only '{HELLO_V2}'",
                "type": "value_error",
            }
        ]
        # a deploy runs the app's image
        monkeypatch.setattr(get_settings(), "allowed_images", HELLO_V1)
        deploy_refused = client.post(f"/apps/{app['id']}/deploy")
        assert deploy_refused.status_code == 422, deploy_refused.text
        assert f"image '{HELLO_V2}' is not allowed here" in deploy_refused.text

    # nothing was queued and the app still runs release 1
    assert api.get(f"/apps/{app['id']}/deployments").json() == before
    assert api.get(f"/apps/{app['id']}").json()["status"] == "running"


def test_members_may_not_name_images_by_id(
    stack: Stack, api: httpx.Client, monkeypatch: pytest.MonkeyPatch, app_name: str
) -> None:
    member = new_member(api)
    monkeypatch.setattr(get_settings(), "allowed_images", "*")
    with TestClient(create_app(), headers=member.headers) as as_member:
        # However short: the engine looks a run of hex digits up as a prefix of an id
        for image in (FULL_ID, SHORT_ID, "sha256:" + "ab" * 6, "3f", "deadbeef"):
            refused = as_member.post(
                "/apps", json={"name": app_name, "image": image, "internal_port": 80}
            )
            assert refused.status_code == 422, (image, refused.text)
            assert refused.json()["detail"][0]["loc"] == ["body", "image"]
            assert "name and tag" in refused.json()["detail"][0]["msg"]
        created = as_member.post(
            "/apps", json={"name": app_name, "image": HELLO_V1, "internal_port": 80}
        )
        assert created.status_code == 201, created.text
        app_id = created.json()["id"]
        for image in (FULL_ID, SHORT_ID):
            patched = as_member.patch(f"/apps/{app_id}", json={"image": image})
            assert patched.status_code == 422, (image, patched.text)
            assert "name and tag" in patched.json()["detail"][0]["msg"]
        # a name that only looks like hex with a tag is a repository, not an id
        assert (
            as_member.patch(f"/apps/{app_id}", json={"image": f"{SHORT_ID}:v1"}).status_code == 200
        )

        # ALLOWED_IMAGES may name ids explicitly
        monkeypatch.setattr(get_settings(), "allowed_images", "minipaas-test/*, sha256:*")
        assert as_member.patch(f"/apps/{app_id}", json={"image": FULL_ID}).status_code == 200
        assert as_member.patch(f"/apps/{app_id}", json={"image": SHORT_ID}).status_code == 422

    # admins run the host and may
    monkeypatch.setattr(get_settings(), "allowed_images", "*")
    with TestClient(create_app(), headers=stack.admin_headers) as as_admin:
        assert as_admin.patch(f"/apps/{app_id}", json={"image": SHORT_ID}).status_code == 200
        by_id = as_admin.post(
            "/apps", json={"name": f"{app_name}-id", "image": FULL_ID, "internal_port": 80}
        )
        assert by_id.status_code == 201, by_id.text
