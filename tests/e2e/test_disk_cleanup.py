"""A member cannot fill the host's disk: redeploys leave no volume behind, and the image
garbage collection removes what the platform pulled and nothing else."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.errors import ImageNotFound
from docker.errors import NotFound as DockerNotFound
from sqlalchemy import text

from minipaas.db.session import get_session
from minipaas.runtime.busybox_image import BUSYBOX_PATHS
from minipaas.services import images
from minipaas.worker import reconciler
from tests.support.flows import create_app, platform_containers, wait_for_deployment
from tests.support.images import HELLO_V1, HELLO_V2
from tests.support.stack import Stack
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker]


def deploy(api: httpx.Client, app_id: int) -> dict[str, Any]:
    response = api.post(f"/apps/{app_id}/deploy")
    assert response.status_code == 202, response.text
    return wait_for_deployment(api, app_id, response.json()["id"])


def build(tag: str, dockerfile: str, files: dict[str, bytes] | None = None) -> str:
    """An image built straight through Docker, without the platform's build label: as an
    admin (or anyone with the host's Docker) would put it there."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, data in {"Dockerfile": dockerfile.encode(), **(files or {})}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    image, _ = docker.from_env().images.build(
        fileobj=context, custom_context=True, tag=tag, rm=True
    )
    return str(image.id)


def plain_image(tag: str, *command: str) -> str:
    busybox = next(Path(p) for p in BUSYBOX_PATHS if Path(p).exists())
    dockerfile = (
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY index.html /www/index.html\n"
        f"CMD {json.dumps(['/bin/busybox', *command])}\n"
    )
    files = {"busybox": busybox.read_bytes(), "index.html": f"{tag}\n".encode()}
    return build(tag, dockerfile, files)


SERVE = ("httpd", "-f", "-p", "80", "-h", "/www")


def present(image: str) -> bool:
    try:
        docker.from_env().images.get(image)
    except ImageNotFound:
        return False
    return True


def collected(image_id: str) -> bool:
    reconciler._remove_old_release_images()  # what the worker's reconciler runs each pass
    return not present(image_id)


def pulled_long_ago(image_id: str, tag: str) -> None:
    """Recorded as the runtime records its pulls (no registry is reachable here), then aged
    past the grace a fresh pull gets."""
    images.record_pull(image_id, tag)
    with get_session() as db:
        db.execute(
            text(
                "UPDATE pulled_images SET pulled_at = now() - interval '1 hour' WHERE image_id = :i"
            ),
            {"i": image_id},
        )
        db.commit()


def test_redeploys_leave_no_anonymous_volume_behind(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    client = docker.from_env()
    tag = f"minipaas-test/{app_name}:volume"
    build(tag, f"FROM {HELLO_V1}\nVOLUME /data\n")
    app_id = create_app(api, app_name, tag)["id"]
    volumes: set[str] = set()
    for _ in range(3):
        assert deploy(api, app_id)["status"] == "succeeded"
        for container_id in platform_containers(stack.settings.instance_name, app_id):
            mounts = client.api.inspect_container(container_id)["Mounts"]
            volumes |= {m["Name"] for m in mounts if m["Type"] == "volume"}
    assert len(volumes) >= 3  # one per container: the image declares VOLUME

    def exists(name: str) -> bool:
        try:
            client.volumes.get(name)
        except DockerNotFound:
            return False
        return True

    # The replaced containers' volumes went with them; the last goes with the app
    eventually(
        lambda: sum(map(exists, volumes)) == 1,
        timeout=15,
        message="the volumes of replaced containers were left behind",
    )
    assert api.delete(f"/apps/{app_id}").status_code == 204
    eventually(
        lambda: not any(map(exists, volumes)),
        timeout=15,
        message="the deleted app's volume was left behind",
    )
    client.images.remove(tag)


def test_image_gc_leaves_an_image_the_platform_did_not_pull(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    # A host image a member ran, then moved on from: older than the kept releases
    tag = f"minipaas-test/{app_name}:host"
    host_image = plain_image(tag, *SERVE)
    app_id = create_app(api, app_name, tag)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    for image in (HELLO_V1, HELLO_V2)[: stack.settings.keep_release_images]:
        assert api.patch(f"/apps/{app_id}", json={"image": image}).status_code == 200
        assert deploy(api, app_id)["status"] == "succeeded"
    eventually(
        lambda: not docker.from_env().containers.list(all=True, filters={"ancestor": tag}),
        timeout=15,
        message="the first release's container was not removed",
    )
    reconciler._remove_old_release_images()
    assert present(host_image) and present(tag)
    assert api.delete(f"/apps/{app_id}").status_code == 204
    reconciler._remove_old_release_images()
    assert present(host_image), "the GC removed an image it did not pull"
    docker.from_env().images.remove(tag)


def test_image_gc_removes_pulled_images_nothing_uses(
    stack: Stack, api: httpx.Client, app_name: str
) -> None:
    # An app deployed from a pulled image, then deleted
    served = f"minipaas-test/{app_name}:pulled"
    served_id = plain_image(served, *SERVE)
    pulled_long_ago(served_id, served)
    app_id = create_app(api, f"{app_name}-a", served)["id"]
    assert deploy(api, app_id)["status"] == "succeeded"
    assert not collected(served_id), "removed while the app runs it"
    assert api.delete(f"/apps/{app_id}").status_code == 204
    eventually(lambda: collected(served_id), timeout=15, message="deleted app's image kept")

    # A pulled image whose deploy failed, once the app no longer names it
    crashing = f"minipaas-test/{app_name}:pulled-crasher"
    crashing_id = plain_image(crashing, "sh", "-c", "exit 3")
    pulled_long_ago(crashing_id, crashing)
    other = create_app(api, f"{app_name}-b", crashing)["id"]
    assert deploy(api, other)["status"] == "failed"
    assert not collected(crashing_id), "removed while the app is configured with it"
    assert api.patch(f"/apps/{other}", json={"image": HELLO_V1}).status_code == 200
    eventually(lambda: collected(crashing_id), timeout=15, message="failed pull's image kept")
    with get_session() as db:
        left = db.execute(
            text("SELECT count(*) FROM pulled_images WHERE image_id IN (:a, :b)"),
            {"a": served_id, "b": crashing_id},
        ).scalar_one()
    assert left == 0, "removed images are still in the ledger"
    assert api.delete(f"/apps/{other}").status_code == 204
