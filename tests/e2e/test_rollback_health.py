"""A rollback runs its release's settings, the health check included, not today's."""

from __future__ import annotations

import httpx
import pytest

from minipaas.runtime import get_runtime
from minipaas.runtime.busybox_image import build_busybox_image
from tests.support.flows import create_app, deploy, wait_for_deployment
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]

# busybox httpd -vv logs every request's path, so the app's log shows what was probed
PATH_LOGGER = "minipaas-test/path-logger:v1"


@pytest.fixture(scope="module")
def path_logger(stack: Stack) -> str:
    command = ["/bin/busybox", "httpd", "-f", "-vv", "-p", "80", "-h", "/www"]
    build_busybox_image(get_runtime(), PATH_LOGGER, command, {"index.html": "paths\n"})
    return PATH_LOGGER


def test_a_rollback_probes_with_the_release_health_check(
    api: httpx.Client, app_name: str, path_logger: str
) -> None:
    app_id = create_app(api, app_name, path_logger, health_check_path="/health-of-release-1")["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    changed = api.patch(f"/apps/{app_id}", json={"health_check_path": "/health-of-today"})
    assert changed.status_code == 200, changed.text
    assert deploy(api, app_id)["status"] == "succeeded"

    releases = api.get(f"/apps/{app_id}/releases").json()
    assert [r["health_check_path"] for r in releases] == [
        "/health-of-today",
        "/health-of-release-1",
    ]
    rollback = api.post(f"/apps/{app_id}/rollback", json={"release": 1})
    assert rollback.status_code == 202, rollback.text
    done = wait_for_deployment(api, app_id, rollback.json()["id"])
    assert done["status"] == "succeeded", done["error"]

    logs = api.get(f"/apps/{app_id}/logs", params={"tail": 200}).json()["logs"]
    assert "/health-of-release-1" in logs, logs
    assert "/health-of-today" not in logs, logs
    # the app now carries the release's settings, health check included
    app = api.get(f"/apps/{app_id}").json()
    assert app["health_check_path"] == "/health-of-release-1"
    assert api.get(f"/apps/{app_id}/releases").json()[0]["health_check_path"] == (
        "/health-of-release-1"
    )
