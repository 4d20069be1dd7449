"""Pushing images to the registry every swarm node pulls from, and naming them by digest.

A node can only run an image a registry serves it: the platform tags what it built or pulled as
`<registry>/<repository>:<tag>`, pushes it, and runs `<registry>/<repository>@sha256:...`, so
every node runs the very same bytes. The tag is derived from the image id, so pushing the same
image again only checks that its layers are there and gives the same digest.

Credentials: docker-py's `login` asks the engine to check them (POST /auth) and keeps them in
the client (`client.api._auth_configs`, keyed by the registry's host:port). `push`, and also
`create_service`/`update_service`, look the registry of the image reference up there and send
the credentials as the X-Registry-Auth header; the swarm manager keeps them with the service's
task, so nodes can pull it (what `docker service create --with-registry-auth` does).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout

from minipaas.runtime.base import EngineUnavailable, ImageUnavailable, RuntimeFailure

# The distribution spec's grammar for a repository's path components
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REFUSED = ("unauthorized", "no basic auth credentials", "authentication required")
# A bare HTTP 401, not the digits inside an address, a name or a digest: a registry on port
# 40179 was once "refusing"
_STATUS_401 = re.compile(r"(?<![\w.:/-])401(?![\w.:/-])")
_UNREACHABLE = ("connection refused", "no such host", "timeout", "no route to host")


class RegistryRefused(RuntimeFailure):
    """The registry refused the platform's credentials."""


def app_repository(instance_name: str, app_id: int) -> str:
    """The repository of one app's images: from our own names and ids, never a user's text."""
    return checked_repository(f"{instance_name}/app-{int(app_id)}")


def checked_repository(name: str) -> str:
    if len(name) > 200 or not _REPOSITORY.fullmatch(name):
        raise ValueError(f"not a registry repository name: {name!r}")
    return name


def login(client: docker.DockerClient, registry: str, user: str, password: str) -> None:
    """Checks the credentials against the registry (through the engine) and keeps them in
    `client`: its later pushes and swarm service creates and updates send them."""
    with _talking_to(registry):
        try:
            # reauth: docker-py would otherwise skip the check for a user it already holds
            client.login(username=user, password=password, registry=registry, reauth=True)
        except APIError as exc:
            raise _registry_failure(registry, str(exc.explanation or exc), user) from exc


def push_for_cluster(
    client: docker.DockerClient, registry: str, image: str, repository: str
) -> str:
    """Pushes a local image (reference or id) as `<registry>/<repository>`; returns the
    reference by digest every node can pull, `<registry>/<repository>@sha256:...`."""
    repository = checked_repository(repository)
    target = f"{registry}/{repository}"
    with _talking_to(registry):
        try:
            local = client.images.get(image)
        except ImageNotFound as exc:
            raise ImageUnavailable(f"image {image} is not on this host; nothing to push") from exc
        tag = cluster_tag(str(local.id))
        try:
            client.api.tag(local.id, target, tag=tag)
            stream = client.api.push(target, tag=tag, stream=True, decode=True)
            digest = _digest_of_push(stream, registry, f"{target}:{tag}")
        except APIError as exc:
            raise _registry_failure(registry, str(exc.explanation or exc)) from exc
    return f"{target}@{digest}"


class ClusterRegistry:
    """One registry and a client logged in to it (once, before its first push).

    `client` may be a function returning the client (a runtime's lazy one); a new client has
    no login, so a refused push logs in again.

    Thread-safe: a deployment pushes from one thread per replica. docker-py's `login` replaces
    the client's credentials with the (empty) config file's when it finds none yet, so two
    first logins at once could drop the other's and its push went out without credentials
    ("no basic auth credentials"): one login at a time, and only the first push logs in."""

    def __init__(
        self,
        client: docker.DockerClient | Callable[[], docker.DockerClient],
        registry: str,
        user: str,
        password: str | None,
    ) -> None:
        self._client = client
        self.registry = registry
        self._user = user
        self._password = password
        self._logged_in = False
        self._login_lock = threading.Lock()

    @property
    def client(self) -> docker.DockerClient:
        if isinstance(self._client, docker.DockerClient):
            return self._client
        return self._client()

    def login(self) -> None:
        with self._login_lock:
            self._login()

    def _login(self) -> None:
        if self._password is not None:
            login(self.client, self.registry, self._user, self._password)
        self._logged_in = True

    def push(self, image: str, repository: str) -> str:
        """push_for_cluster(); a refusal after an earlier login (the registry restarted with
        another password) logs in again once."""
        if not self._logged_in:
            with self._login_lock:
                if not self._logged_in:
                    self._login()
            return push_for_cluster(self.client, self.registry, image, repository)
        try:
            return push_for_cluster(self.client, self.registry, image, repository)
        except RegistryRefused:
            if self._password is None:
                raise
            self.login()
            return push_for_cluster(self.client, self.registry, image, repository)


def forget_cluster_names(client: docker.DockerClient, image: str, registry: str) -> int:
    """Removes the engine's names of an image under `registry` (tags and digests a push or a
    node's pull gave it), never the image itself; returns how many went.

    The engine refuses to remove an image by id while names in two repositories point at it,
    so the image collector calls this first; a node pulls the image again by digest."""
    with _talking_to(registry):
        try:
            attrs = client.images.get(image).attrs
        except ImageNotFound:
            return 0
        names = [*(attrs.get("RepoTags") or []), *(attrs.get("RepoDigests") or [])]
        ours = [name for name in names if name.startswith(f"{registry}/")]
        others = [name for name in names if name not in ours and name != "<none>:<none>"]
        if not others and ours:
            # Removing every name would remove the image (the collector decides that): keep one
            # repository's names, which alone do not stop a removal by id
            kept = _repository_of(ours[0])
            ours = [name for name in ours if _repository_of(name) != kept]
        for name in ours:
            try:
                client.api.remove_image(name, force=False, noprune=True)
            except ImageNotFound:
                continue
            except APIError as exc:
                raise RuntimeFailure(f"removing the name {name} failed: {exc.explanation}") from exc
        return len(ours)


def _repository_of(name: str) -> str:
    """`host:port/repo` of `host:port/repo:tag` or `host:port/repo@sha256:...`."""
    name = name.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def cluster_tag(image_id: str) -> str:
    """The tag an image is pushed under: its id's, so the same image keeps one name."""
    hex_id = image_id.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{12,64}", hex_id):
        raise ValueError(f"not an image id: {image_id!r}")
    return f"id-{hex_id[:32]}"


def _digest_of_push(stream: Iterable[dict[str, Any]], registry: str, target: str) -> str:
    """The engine reports a failed push inside the stream (HTTP 200): read it to the end."""
    digest = None
    for event in stream:
        error = event.get("error") or (event.get("errorDetail") or {}).get("message")
        if error:
            raise _registry_failure(registry, str(error))
        aux = event.get("aux")
        if isinstance(aux, dict) and _DIGEST.fullmatch(str(aux.get("Digest", ""))):
            digest = str(aux["Digest"])
    if digest is None:
        raise RuntimeFailure(f"pushing {target} to {registry} ended without a digest")
    return digest


def _registry_failure(registry: str, detail: str, user: str | None = None) -> RuntimeFailure:
    lowered = detail.lower()
    # Reachability first: a registry that never answered cannot have refused anyone
    if any(words in lowered for words in _UNREACHABLE):
        return ImageUnavailable(
            f"the image registry {registry} cannot be reached: is it running, and is "
            f"REGISTRY_URL right? ({detail})"
        )
    if any(word in lowered for word in _REFUSED) or _STATUS_401.search(lowered):
        who = f" user '{user}'" if user else " the platform's credentials"
        return RegistryRefused(
            f"the image registry {registry} refused{who}: check REGISTRY_USER and "
            f"REGISTRY_PASSWORD ({detail})"
        )
    return ImageUnavailable(f"the image registry {registry} failed: {detail}")


@contextmanager
def _talking_to(registry: str) -> Iterator[None]:
    """The engine's own failures say so; anything else docker-py raises is the registry's."""
    try:
        yield
    except (RequestsConnectionError, RequestsTimeout) as exc:
        raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc
    except RuntimeFailure:
        raise
    except DockerException as exc:
        raise _registry_failure(registry, str(exc)) from exc
