"""The containerized install run for real: every image built on this host (Debian from
debootstrap, Python packages from a host-side wheelhouse, PostgreSQL and Redis from Debian's
packages), `docker-compose up -d` with a .env of random secrets, then the flow `make up` passes:
create, deploy, route by host name and by path, logs, stop, start. Tear-down leaves nothing.

Slow on a machine that never built the images (debootstrap and apt inside builds: about 3 min
here); a rerun reuses them (35-60 s: the stack starting, and the minipaas layer if src changed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

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


def test_tear_down_leaves_nothing(install: ComposeInstall) -> None:
    assert install.leftovers(), "the install should be running before the tear-down"
    install.tear_down()
    assert install.leftovers() == []
