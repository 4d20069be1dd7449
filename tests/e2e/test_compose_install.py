"""The containerized install run for real: every image built on this host (Debian from
debootstrap, Python packages from a host-side wheelhouse, PostgreSQL and Redis from Debian's
packages), `docker-compose up -d` with a .env of random secrets, then the flow `make up` passes:
create, deploy, route by host name and by path, logs, stop, start; a FROM scratch build
uploaded through the API, built by the builder service and served; a backup made in the API's
container and opened with the platform's reader; a restore (refused while the platform runs,
then done from a one-off container). Tear-down leaves nothing.

Slow on a machine that never built the images (debootstrap and apt inside builds: about 3 min
here); a rerun reuses them (about 60 s: the stack starting, the minipaas layer if src changed,
and 25 s for the restore, which stops and starts the platform's containers).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from minipaas.host.backup import DUMP, KEY, MANIFEST, known_revisions
from minipaas.host.backup_archive import Secret, read_pieces
from tests.support.builds import build_log, scratch_context, start_build, tar_bytes, wait_for_build
from tests.support.compose import (
    COMPOSE_FILE,
    ROOT,
    ComposeInstall,
    build_images,
    new_install,
)
from tests.support.flows import wait_for_deployment
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

APP_IMAGE = "minipaas-test/compose-hello:v1"
APP_PAGE = "hello from the compose install\n"
BUILT_PAGE = "built by the compose builder\n"
# In the data volume the API and worker share
BACKUP_FILE = "/var/lib/minipaas/backups/compose-test.mpbackup"
PASSPHRASE = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def images() -> None:
    for tool in ("docker-compose", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (`make test` installs it)")
    build_images()
    # The app the platform deploys: built on the host's engine, which the compose worker
    # drives through its socket, so it finds the image there
    from minipaas.runtime import get_runtime
    from minipaas.runtime.busybox_image import HTTPD, build_busybox_image

    build_busybox_image(get_runtime(), APP_IMAGE, HTTPD, {"index.html": APP_PAGE})


@pytest.fixture(scope="module")
def install(images: None) -> Iterator[ComposeInstall]:
    started = new_install()
    try:
        started.up()
        started.wait_ready()
        yield started
    finally:
        started.tear_down()


@pytest.fixture(scope="module")
def api(install: ComposeInstall) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {install.admin_token()}"}
    with httpx.Client(base_url=install.api_url, headers=headers, timeout=60) as client:
        yield client


def test_compose_refuses_to_start_without_secrets(images: None, tmp_path: Path) -> None:
    # .env.example ships no password: a .env copied from it is refused by docker-compose
    env_file = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", env_file)
    refused = subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr or "REDIS_PASSWORD" in refused.stderr
    # A known or short password set by hand is refused by the images themselves
    for image, variable in (
        ("minipaas-postgres:15", "POSTGRES_PASSWORD"),
        ("minipaas-redis:7", "REDIS_PASSWORD"),
    ):
        result = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "-e", f"{variable}=minipaas", image],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 64, (image, result.stdout, result.stderr)
        assert f"{variable} is unset or shorter than 16 characters" in result.stderr


def test_redis_answers_noauth_without_the_password(install: ComposeInstall) -> None:
    # From the host, on the published loopback port: a bare PING, as redis-cli sends it
    with socket.create_connection(("127.0.0.1", install.redis_port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(200).startswith(b"-NOAUTH")
    # redis-cli inside the container, without the password
    result = install.compose("exec", "-T", "redis", "redis-cli", "ping")
    assert "NOAUTH" in result.stdout + result.stderr
    password = install.env_value("REDIS_PASSWORD")
    client = redis.Redis(host="127.0.0.1", port=install.redis_port, password=password)
    assert client.ping()


def test_only_the_router_and_redis_listen_on_the_host(install: ComposeInstall) -> None:
    import docker

    client = docker.from_env()
    published: dict[str, list[str]] = {}
    for container in client.containers.list(
        filters={"label": f"com.docker.compose.project={install.project}"}
    ):
        service = container.labels["com.docker.compose.service"]
        ports = container.attrs["NetworkSettings"]["Ports"] or {}
        published[service] = [
            f"{binding['HostIp']}:{binding['HostPort']}"
            for bindings in ports.values()
            for binding in bindings or []
        ]
        if service == "postgres":
            # a unix socket in a volume, no network at all
            assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    assert published == {
        "postgres": [],
        "redis": [f"127.0.0.1:{install.redis_port}"],
        "api": [],
        "worker": [],
        "builder": [],
    }


def test_create_deploy_route_logs_stop_start(install: ComposeInstall, api: httpx.Client) -> None:
    router = httpx.Client(base_url=install.router_url, timeout=30)
    try:
        response = api.post(
            "/apps", json={"name": "hello", "image": APP_IMAGE, "internal_port": 80}
        )
        assert response.status_code == 201, response.text
        app_id = response.json()["id"]
        host = {"Host": f"hello.{install.env_value('APPS_DOMAIN')}"}

        queued = api.post(f"/apps/{app_id}/deploy")
        assert queued.status_code == 202, queued.text
        deployment = wait_for_deployment(api, app_id, queued.json()["id"], timeout=120)
        assert deployment["status"] == "succeeded", deployment["error"]
        assert api.get(f"/apps/{app_id}").json()["status"] == "running"

        by_host = router.get("/", headers=host)
        assert (by_host.status_code, by_host.text) == (200, APP_PAGE)
        by_path = router.get(f"/apps/{app_id}/")
        assert (by_path.status_code, by_path.text) == (200, APP_PAGE)

        def logged() -> str | None:
            logs = str(api.get(f"/apps/{app_id}/logs", params={"tail": 50}).json()["logs"])
            return logs if "response:200" in logs else None  # busybox httpd -v logs requests

        eventually(logged, timeout=10, message="the app's logs do not show its requests")

        stopped = api.post(f"/apps/{app_id}/stop")
        assert stopped.status_code == 200, stopped.text
        assert api.get(f"/apps/{app_id}").json()["status"] == "stopped"
        assert router.get("/", headers=host).status_code == 503

        started = api.post(f"/apps/{app_id}/start")
        assert started.status_code == 200, started.text
        assert api.get(f"/apps/{app_id}").json()["status"] == "running"
        again = router.get("/", headers=host)
        assert (again.status_code, again.text) == (200, APP_PAGE)
    except BaseException:
        print(install.logs())  # pytest shows it with the failure
        raise
    finally:
        router.close()


def test_build_from_source_is_built_deployed_and_served(
    install: ComposeInstall, api: httpx.Client
) -> None:
    # Uploaded to the API (DATA_DIR/builds in the shared volume), built by the builder
    # service on the host's engine, deployed by the worker, served by the router
    router = httpx.Client(base_url=install.router_url, timeout=30)
    try:
        response = api.post(
            "/apps", json={"name": "built", "image": APP_IMAGE, "internal_port": 80}
        )
        assert response.status_code == 201, response.text
        app_id = response.json()["id"]
        answer = start_build(api, app_id, tar_bytes(scratch_context(BUILT_PAGE)))
        assert answer.status_code == 202, answer.text
        build = wait_for_build(api, app_id, answer.json()["number"], timeout=120)
        assert build["status"] == "succeeded", f"{build['error']}\n{install.logs()}"
        assert build["image_tag"].startswith(f"{install.instance}-builds/"), build["image_tag"]
        assert "Successfully tagged" in build_log(api, app_id, build["number"])
        deployment = wait_for_deployment(api, app_id, build["deployment_id"], timeout=120)
        assert deployment["status"] == "succeeded", deployment["error"]
        assert deployment["image_id"] == build["image_id"]
        host = {"Host": f"built.{install.env_value('APPS_DOMAIN')}"}
        served = router.get("/", headers=host)
        assert (served.status_code, served.text) == (200, BUILT_PAGE)
    except BaseException:
        print(install.logs())
        raise
    finally:
        router.close()


def read_container_file(install: ComposeInstall, service: str, path: str) -> bytes:
    """A file out of a service's container, through the engine (`docker cp`)."""
    import docker

    (container,) = docker.from_env().containers.list(
        filters={
            "label": [
                f"com.docker.compose.project={install.project}",
                f"com.docker.compose.service={service}",
            ]
        }
    )
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.extractfile(os.path.basename(path))
        assert member is not None
        return member.read()


def test_backup_in_the_api_container(install: ComposeInstall, api: httpx.Client) -> None:
    # pg_dump (PostgreSQL 15's client in the platform image) over the socket volume
    made = install.compose(
        "exec",
        "-T",
        "-e",
        f"MINIPAAS_BACKUP_PASSPHRASE={PASSPHRASE}",
        "api",
        "minipaas",
        "platform",
        "backup",
        BACKUP_FILE,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"backup written to {BACKUP_FILE}" in made.stdout
    # Opened on the host with the platform's own reader: the manifest, the dump, the key
    members: dict[str, bytes] = {}
    manifest: dict[str, object] = {}
    archive = io.BytesIO(read_container_file(install, "api", BACKUP_FILE))
    for piece in read_pieces(archive, Secret.passphrase(PASSPHRASE)):
        if piece.last:
            assert piece.name == MANIFEST
            manifest = json.loads(piece.data)
            break
        members[piece.name] = members.get(piece.name, b"") + piece.data
    assert manifest["instance_name"] == install.instance
    assert manifest["alembic_revision"] == known_revisions()[1]
    assert set(members) == {DUMP, KEY}
    assert members[DUMP].startswith(b"PGDMP")  # pg_dump's custom format
    listed = manifest["members"]
    assert isinstance(listed, dict)
    for name, data in members.items():
        assert listed[name] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    # Its table of contents (not compressed) names the platform's tables
    assert b"TABLE DATA" in members[DUMP] and b"alembic_version" in members[DUMP]


def test_restore_refused_while_running_then_done_in_a_one_off_container(
    install: ComposeInstall, api: httpx.Client
) -> None:
    later = api.post("/apps", json={"name": "later", "image": APP_IMAGE, "internal_port": 80})
    assert later.status_code == 201, later.text
    passphrase = ("-e", f"MINIPAAS_BACKUP_PASSPHRASE={PASSPHRASE}")
    restore = ("minipaas", "platform", "restore", "--force", BACKUP_FILE)
    # While the API, worker and builder run, the restore says how to do it and changes nothing
    refused = install.compose("exec", "-T", *passphrase, "api", *restore, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "docker-compose stop api worker builder" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert api.get(f"/apps/{later.json()['id']}").status_code == 200

    stopped = install.compose("stop", "-t", "30", "api", "worker", "builder", timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    restored = install.compose(
        "run", "--rm", "--no-deps", "-T", *passphrase, "api", *restore, timeout=300
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored the backup of" in restored.stdout
    assert "2 app(s) are being started" in restored.stdout  # hello and built, redeployed
    install.up()
    install.wait_ready()
    # The database is the backup's: the app made after it is gone, the others come back
    assert {app["name"] for app in api.get("/apps").json()} == {"hello", "built"}
    router = httpx.Client(base_url=install.router_url, timeout=30)
    domain = install.env_value("APPS_DOMAIN")
    try:
        for name, page in (("hello", APP_PAGE), ("built", BUILT_PAGE)):

            def served(name: str = name, page: str = page) -> bool | None:
                response = router.get("/", headers={"Host": f"{name}.{domain}"})
                return True if (response.status_code, response.text) == (200, page) else None

            eventually(served, timeout=120, message=f"{name} is not served after the restore")
    except BaseException:
        print(install.logs())
        raise
    finally:
        router.close()


def test_tear_down_leaves_nothing(install: ComposeInstall) -> None:
    assert install.leftovers(), "the install should be running before the tear-down"
    install.tear_down()
    assert install.leftovers() == []
