"""Pushing images for the cluster, against a real docker-registry (htpasswd auth, loopback)
and the real engine: the digest reference pulls back the same image, a second push gives the
same digest, wrong credentials and an unreachable registry fail with a message that says so."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.errors import ImageNotFound, NotFound

from minipaas.config import Settings
from minipaas.runtime.base import ImageUnavailable, RuntimeFailure
from minipaas.runtime.busybox_image import HTTPD, build_busybox_image
from minipaas.runtime.docker_runtime import DockerRuntime
from minipaas.runtime.registry import (
    ClusterRegistry,
    RegistryRefused,
    app_repository,
    forget_cluster_names,
    login,
    push_for_cluster,
)
from tests.support.registry import RunningRegistry, free_loopback_port, running_registry
from tests.support.stack import ensure_swarm_manager

pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def registry() -> Iterator[RunningRegistry]:
    with running_registry() as running:
        yield running


@pytest.fixture
def runtime(tmp_path: Path) -> DockerRuntime:
    return DockerRuntime(Settings(data_dir=tmp_path, _env_file=None))


@pytest.fixture
def image(runtime: DockerRuntime) -> Iterator[str]:
    """An image of its own (its page is unique, so its id is too), removed afterwards with
    every name this test gave it."""
    marker = secrets.token_hex(6)
    tag = f"minipaas-test/registry-push:{marker}"
    build_busybox_image(runtime, tag, HTTPD, {"index.html": f"pushed {marker}\n"})
    image_id = str(runtime.client.images.get(tag).id)
    yield tag
    with suppress(ImageNotFound, NotFound):
        runtime.client.api.remove_image(image_id, force=True)


def _repository() -> str:
    return app_repository(f"mpt{secrets.token_hex(3)}", 7)


def test_a_pushed_image_pulls_back_by_digest_once_gone_from_the_host(
    registry: RunningRegistry, runtime: DockerRuntime, image: str
) -> None:
    client = runtime.client
    image_id = str(client.images.get(image).id)
    login(client, registry.address, registry.user, registry.password)

    reference = push_for_cluster(client, registry.address, image, _repository())

    assert reference.startswith(f"{registry.address}/") and "@sha256:" in reference
    # Gone from the engine (every name of it), then back from the registry by digest alone
    client.api.remove_image(image_id, force=True)
    with pytest.raises(ImageNotFound):
        client.images.get(image_id)
    pulled = client.images.pull(reference)
    assert pulled.id == image_id
    assert reference in pulled.attrs["RepoDigests"]


def test_the_same_image_pushed_twice_gives_the_same_digest(
    registry: RunningRegistry, runtime: DockerRuntime, image: str
) -> None:
    # Given the client lazily, as a runtime holds it
    pushes = ClusterRegistry(
        lambda: runtime.client, registry.address, registry.user, registry.password
    )
    repository = _repository()
    image_id = str(runtime.client.images.get(image).id)

    first = pushes.push(image, repository)
    began = time.monotonic()
    second = pushes.push(image_id, repository)  # by id this time
    assert second == first
    # Nothing to upload the second time: the layers are there
    assert time.monotonic() - began < 5


def test_a_new_client_logs_in_again_when_refused(
    registry: RunningRegistry, runtime: DockerRuntime, image: str
) -> None:
    clients = [runtime.client]
    pushes = ClusterRegistry(
        lambda: clients[-1], registry.address, registry.user, registry.password
    )
    first = pushes.push(image, _repository())
    # The runtime made a new client (the engine restarted, say): it holds no login
    clients.append(docker.from_env())
    try:
        second = pushes.push(image, first.split("/", 1)[1].split("@")[0])
    finally:
        clients[-1].close()
    assert second == first


def test_first_pushes_from_several_threads_log_in_once_and_all_carry_the_login(
    registry: RunningRegistry, runtime: DockerRuntime, image: str
) -> None:
    """A deployment's replicas push from threads of their own, so a new worker's first
    deployment pushes from all of them at once. docker-py's login replaces the client's
    credentials when it holds none yet, so logins racing each other could drop one another's
    and a push went out without any (seen in CI): one login, every push with it."""
    repository = _repository()
    for _attempt in range(3):
        references, logins = _first_pushes_at_once(registry, image, repository, threads=8)
        assert len(set(references)) == 1
        assert logins == [registry.address]


def _first_pushes_at_once(
    registry: RunningRegistry, image: str, repository: str, *, threads: int
) -> tuple[list[str], list[str]]:
    """Pushes from `threads` threads through a new client (a new worker process's: no login
    yet); returns the references and the registries logged in to, one entry per login."""
    client = docker.from_env()
    logins: list[str] = []
    real_login = client.api.login

    def counted_login(*args: Any, **kwargs: Any) -> Any:
        logins.append(str(kwargs.get("registry")))
        return real_login(*args, **kwargs)

    client.api.login = counted_login  # type: ignore[method-assign]
    try:
        pushes = ClusterRegistry(client, registry.address, registry.user, registry.password)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            references = list(pool.map(lambda _: pushes.push(image, repository), range(threads)))
    finally:
        client.close()
    return references, logins


def test_forgetting_the_registry_names_lets_the_collector_remove_the_image(
    registry: RunningRegistry, runtime: DockerRuntime, image: str
) -> None:
    client = runtime.client
    image_id = str(client.images.get(image).id)
    pushes = ClusterRegistry(client, registry.address, registry.user, registry.password)
    reference = pushes.push(image, _repository())
    pushes.push(image, _repository())  # a second app's repository: three repositories now
    # Names in several repositories: the engine refuses a removal by id (the collector's)
    assert runtime.remove_image(image_id) is False

    assert forget_cluster_names(client, image_id, registry.address) == 4  # 2 tags, 2 digests
    attrs = client.images.get(image_id).attrs
    assert attrs["RepoTags"] == [image] and attrs["RepoDigests"] == []
    assert runtime.remove_image(image_id) is True
    # Still in the registry: a node pulls it by digest
    assert client.images.pull(reference).id == image_id
    # Only the registry's names left (the pulled digest, a third repository's tag and
    # digest): one repository's stay, so the image is not removed here, and a removal by id
    # then works
    pushes.push(image_id, _repository())
    assert forget_cluster_names(client, image_id, registry.address) == 1
    assert client.images.get(image_id).attrs["RepoDigests"] != []
    assert runtime.remove_image(image_id) is True


def test_anonymous_access_is_refused_and_the_platforms_password_accepted(
    registry: RunningRegistry,
) -> None:
    url = f"http://{registry.address}/v2/"
    assert httpx.get(url, timeout=5).status_code == 401
    wrong = httpx.get(url, auth=(registry.user, "not-the-password"), timeout=5)
    assert wrong.status_code == 401
    assert httpx.get(url, auth=(registry.user, registry.password), timeout=5).status_code == 200


def test_a_wrong_password_is_refused_with_a_clear_message(
    registry: RunningRegistry, runtime: DockerRuntime, image: str
) -> None:
    with pytest.raises(RegistryRefused) as refused:
        login(runtime.client, registry.address, registry.user, "not-the-password")
    message = str(refused.value)
    assert registry.address in message and "REGISTRY_PASSWORD" in message
    # A client that never logged in is refused at the push, with the same advice
    fresh = docker.from_env()
    try:
        with pytest.raises(RegistryRefused, match="REGISTRY_USER and REGISTRY_PASSWORD"):
            push_for_cluster(fresh, registry.address, image, _repository())
    finally:
        fresh.close()


def test_an_unreachable_registry_says_so(runtime: DockerRuntime, image: str) -> None:
    nowhere = f"127.0.0.1:{free_loopback_port()}"  # nothing listens there
    with pytest.raises(ImageUnavailable, match="cannot be reached") as failed:
        login(runtime.client, nowhere, "minipaas", "whatever")
    assert nowhere in str(failed.value)
    with pytest.raises(ImageUnavailable, match="cannot be reached"):
        push_for_cluster(runtime.client, nowhere, image, _repository())


def test_an_image_missing_on_the_host_is_refused_before_any_push(
    registry: RunningRegistry, runtime: DockerRuntime
) -> None:
    with pytest.raises(ImageUnavailable, match="not on this host"):
        push_for_cluster(
            runtime.client, registry.address, "minipaas-test/does-not-exist:v1", _repository()
        )


def test_repository_names_come_from_our_names_only(
    registry: RunningRegistry, runtime: DockerRuntime, image: str
) -> None:
    for bad in ("Upper/case", "a//b", "../etc", "a/b:tag", "-a/b", ""):
        with pytest.raises(ValueError):
            push_for_cluster(runtime.client, registry.address, image, bad)
    with pytest.raises(ValueError):
        app_repository("Not An Instance", 1)
    assert isinstance(RegistryRefused("x"), RuntimeFailure)


def _task_outcome(
    client: docker.DockerClient, service_id: str, timeout: float = 60
) -> dict[str, Any]:
    """The service's task once it runs or has ended (Swarm's state and error message)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        tasks = client.api.tasks(filters={"service": service_id})
        if tasks:
            status = tasks[0].get("Status") or {}
            if status.get("State") in {"running", "rejected", "failed", "complete", "shutdown"}:
                return status
        time.sleep(0.2)
    raise AssertionError(f"the task did not run nor end within {timeout:.0f} s: {status}")


def test_swarm_services_get_the_login_so_a_node_pulls_the_pushed_image(
    registry: RunningRegistry, runtime: DockerRuntime, image: str
) -> None:
    client = runtime.client
    ensure_swarm_manager()
    image_id = str(client.images.get(image).id)
    login(client, registry.address, registry.user, registry.password)
    reference = push_for_cluster(client, registry.address, image, _repository())
    # The node must pull it: nothing of it is left on the engine
    client.api.remove_image(image_id, force=True)
    name = f"minipaas-test-registry-{secrets.token_hex(4)}"
    anonymous = docker.from_env()
    services = []
    try:
        # Without the login the node is refused; with it (docker-py's X-Registry-Auth on
        # create_service) it pulls and runs the task
        refused = anonymous.services.create(
            reference,
            name=f"{name}-anon",
            restart_policy=docker.types.RestartPolicy(condition="none"),
        )
        services.append(refused)
        outcome = _task_outcome(anonymous, refused.id)
        assert outcome["State"] == "rejected" and "No such image" in outcome.get("Err", ""), outcome
        with pytest.raises(ImageNotFound):
            client.images.get(image_id)
        service = client.services.create(
            reference, name=name, restart_policy=docker.types.RestartPolicy(condition="none")
        )
        services.append(service)
        status = _task_outcome(client, service.id)
        assert status["State"] == "running", status
        assert client.images.get(reference).id == image_id
    finally:
        for made in services:
            with suppress(NotFound):
                made.remove()
        # Swarm removes the tasks' containers afterwards; the image goes only once they have
        ids = [made.id for made in services]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            client.api.containers(all=True, filters={"label": f"com.docker.swarm.service.id={i}"})
            for i in ids
        ):
            time.sleep(0.2)
        anonymous.close()
