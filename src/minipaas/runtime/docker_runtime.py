"""The only module that talks to the Docker engine."""

from __future__ import annotations

import fcntl
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig
from requests.exceptions import ConnectionError as RequestsConnectionError

from minipaas.config import Settings
from minipaas.runtime import inventory, labels
from minipaas.runtime.base import (
    APP_CAPABILITIES,
    LOOPBACK,
    ContainerSpec,
    ContainerState,
    Endpoint,
    EngineUnavailable,
    ImageUnavailable,
    InstanceObject,
    RuntimeFailure,
    StartedContainer,
)
from minipaas.runtime.engine_errors import as_runtime_failure, engine_reachable
from minipaas.runtime.inventory import Node, Placement
from minipaas.runtime.listening import Listener, listeners

log = logging.getLogger(__name__)

# How long an exit by SIGKILL (137) of a container with a memory limit may wait for Docker to
# mark it as an OOM kill (exit_state)
OOM_SETTLE_SECONDS = 1.0

# Docker's own bridge network (docker0), and the option that keeps its containers apart
DEFAULT_BRIDGE = "bridge"
ICC_OPTION = "com.docker.network.bridge.enable_icc"

# This install's id (services/install_identity.py), asked for when first needed
InstallIdSource = Callable[[], str]
# Told (image id, reference) when the platform pulls an image the host did not have: only
# those (and images it built) may be garbage-collected later
PullRecorder = Callable[[str, str], None]


def container_name(settings: Settings, app_id: int, deployment_id: int, replica: int = 0) -> str:
    """Replica 0 keeps the name a one-container app always had; the others add -r<n>."""
    suffix = f"-r{replica}" if replica else ""
    return f"{settings.instance_name}-app{app_id}-d{deployment_id}{suffix}"


def platform_labels(
    settings: Settings, app_id: int, deployment_id: int, replica: int = 0
) -> dict[str, str]:
    return labels.container_labels(settings.instance_name, app_id, deployment_id, replica)


def _host_port(attrs: dict[str, Any], port_key: str | None = None) -> int | None:
    """The host port Docker published for `port_key` (or for any port), from inspect data."""
    ports: dict[str, Any] = attrs.get("NetworkSettings", {}).get("Ports") or {}
    candidates = [ports.get(port_key)] if port_key else list(ports.values())
    for bindings in candidates:
        if bindings:
            return int(bindings[0]["HostPort"])
    return None


def _listed_host_port(summary: dict[str, Any]) -> int | None:
    """The host port Docker published, from a container list entry (no inspect needed)."""
    for port in summary.get("Ports") or []:
        if port.get("PublicPort"):
            return int(port["PublicPort"])
    return None


def default_bridge_isolated(api: docker.APIClient) -> bool:
    """Whether the engine keeps the containers on its default bridge apart (`icc: false`)."""
    try:
        options = api.inspect_network(DEFAULT_BRIDGE).get("Options") or {}
    except NotFound:  # an engine started with --bridge=none has no default bridge
        return False
    return bool(options.get(ICC_OPTION) == "false")


def engine_seconds(stamp: object) -> float | None:
    """Seconds since the epoch of one of the engine's RFC 3339 times ("...:05.123456789Z")."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", str(stamp or ""))
    if match is None:
        return None
    whole = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return whole.timestamp() + float(f"0.{match.group(2) or 0}")


def _decode(raw: bytes | str) -> str:
    # App output is arbitrary bytes; never fail on them
    return raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")


class DockerRuntime:
    def __init__(
        self,
        settings: Settings,
        client: docker.DockerClient | None = None,
        on_pull: PullRecorder | None = None,
        install_id: InstallIdSource | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._network_ready = False
        self._on_pull = on_pull
        self._install_id_source = install_id
        self._install_id: str | None = None
        # None until the engine answered a container with a disk bound (APP_DISK_MB)
        self.disk_bound_supported: bool | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=60)
            except DockerException as exc:
                raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc
        return self._client

    @property
    def instance_name(self) -> str:
        return self._settings.instance_name

    @property
    def install_id(self) -> str | None:
        """This install's id (None for a runtime built without one, as some tests do)."""
        if self._install_id is None and self._install_id_source is not None:
            self._install_id = self._install_id_source()
        return self._install_id

    def _stamp(self) -> dict[str, str]:
        return {labels.INSTALL_ID: self.install_id} if self.install_id else {}

    def ping(self) -> None:
        try:
            self.client.ping()
        except (DockerException, OSError) as exc:
            raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc

    def ensure_image(self, image: str, pull_policy: str) -> str:
        """Makes the image present according to the pull policy; returns its id."""
        with engine_reachable():
            return self._ensure_image(image, pull_policy)

    def _ensure_image(self, image: str, pull_policy: str) -> str:
        if pull_policy == "always":
            return self._pull(image)
        try:
            return str(self.client.images.get(image).id)
        except ImageNotFound:
            if pull_policy == "never":
                raise ImageUnavailable(
                    f"image '{image}' is not present on this host and the app's pull_policy "
                    "is 'never': build or load it on the host, or change pull_policy"
                ) from None
            return self._pull(image)

    def _pull(self, image: str) -> str:
        before = self.image_id(image)
        try:
            pulled = self.client.images.pull(image)
        except (APIError, DockerException) as exc:
            explanation = getattr(exc, "explanation", None) or str(exc)
            raise ImageUnavailable(
                f"image '{image}' is not present on this host and could not be pulled: "
                f"{explanation}"
            ) from exc
        if isinstance(pulled, list):  # several tags came back; take the first
            pulled = pulled[0]
        image_id = str(pulled.id)
        if image_id != before:  # an image the host already had stays the host's
            self._record_pull(image_id, image)
        return image_id

    def _record_pull(self, image_id: str, reference: str) -> None:
        if self._on_pull is None:
            return
        try:
            self._on_pull(image_id, reference)
        except Exception:  # unrecorded means never collected: the safe side, not a failed deploy
            log.warning("could not record the pull of %s (%s)", reference, image_id, exc_info=True)

    def run_container(self, spec: ContainerSpec) -> StartedContainer:
        """Creates and starts a container, its port published on 127.0.0.1 by Docker."""
        with engine_reachable():
            return self._run_container(spec)

    def _run_container(self, spec: ContainerSpec, *, retried: bool = False) -> StartedContainer:
        port_key = f"{spec.internal_port}/tcp"
        network = self.ensure_apps_network()
        api = self.client.api
        try:
            try:
                container_id = self._create(spec, port_key, network)
            except APIError as exc:
                if exc.status_code != 409:
                    raise
                # The name is taken by a leftover of an interrupted attempt of the same
                # deployment: removed only then, not before every create (a round trip each)
                self.remove(spec.name)
                container_id = self._create(spec, port_key, network)
            api.start(container_id)
            attrs = api.inspect_container(container_id)  # the port Docker picked
        except APIError as exc:
            self.remove(spec.name)
            own = network == self._settings.apps_network
            if "network" in str(exc.explanation) and own and self._network_ready and not retried:
                self._network_ready = False  # removed by hand since we last looked: recreate
                return self._run_container(spec, retried=True)
            raise RuntimeFailure(f"container could not start: {exc.explanation or exc}") from exc
        published = _host_port(attrs, port_key)
        if published is None:
            state = self.exit_state(container_id)
            logs = self.tail_logs(container_id, 20)
            self.remove(container_id)
            code = state.exit_code if state else "unknown"
            # An app over its memory limit from its first instant ends here, not at the health
            # check: said the same way (ContainerState.stop_reason)
            how = state.stop_reason(while_starting=True) if state is not None else "exited"
            if how == "exited":
                how = "exited at once"
            raise RuntimeFailure(f"container {how} with code {code}; last log lines:\n{logs}")
        return StartedContainer(id=container_id, name=spec.name, published_port=published)

    def _create(self, spec: ContainerSpec, port_key: str, network: str) -> str:
        """Creates the container, returns its id, with a bound on its writable layer where the
        engine has one (overlay2 needs xfs with pquota); else without, said once in the log."""
        bound_mb = self._settings.app_disk_mb
        if bound_mb and self.disk_bound_supported is not False:
            try:
                created = self._create_with(spec, port_key, network, {"size": f"{bound_mb}m"})
            except APIError as exc:
                if "storage" not in str(exc.explanation or exc).lower():
                    raise
                self.disk_bound_supported = False
                self.remove(spec.name)  # in case the engine kept the name
                log.warning(
                    "APP_DISK_MB is not enforced: this Docker engine cannot bound a container's "
                    "writable layer (%s)",
                    exc.explanation or exc,
                )
            else:
                self.disk_bound_supported = True
                return created
        return self._create_with(spec, port_key, network, None)

    def _create_with(
        self, spec: ContainerSpec, port_key: str, network: str, storage_opt: dict[str, str] | None
    ) -> str:
        """The engine's create call itself, on the low-level API: the high-level
        containers.create() inspects the new container once more (a round trip per deploy)
        before start(), which needs only its id."""
        settings = self._settings
        api = self.client.api
        host_config = api.create_host_config(
            # Docker picks a free host port itself: no port-picking race
            port_bindings={port_key: ("127.0.0.1", None)},
            # Docker never restarts app containers: the platform does (worker/healer.py),
            # so one restarter decides, with a backoff the app's owner can see
            restart_policy={"Name": "no"},
            log_config=LogConfig(
                type="json-file",
                config={
                    "max-size": settings.log_max_size,
                    "max-file": str(settings.log_max_files),
                },
            ),
            init=True,  # signals reach the app even when it ignores SIGTERM as PID 1
            # Hardening is fixed here; nothing from the request reaches these options
            security_opt=["no-new-privileges"],
            cap_drop=["ALL"],
            cap_add=APP_CAPABILITIES,
            mem_limit=f"{spec.memory_mb}m",
            memswap_limit=f"{spec.memory_mb}m",  # no swap beyond the limit
            nano_cpus=int(spec.cpus * 1e9),
            pids_limit=spec.pids,
            network_mode=network,
            storage_opt=storage_opt,
        )
        port, _, protocol = port_key.partition("/")
        created = api.create_container(
            spec.image,
            command=spec.command,
            name=spec.name,
            environment=spec.env,
            labels={**spec.labels, **self._stamp()},
            ports=[(int(port), protocol)],
            host_config=host_config,
            networking_config=api.create_networking_config({network: api.create_endpoint_config()}),
            detach=True,
        )
        return str(created["Id"])

    def ensure_apps_network(self) -> str:
        """The network app containers are created on; apps cannot talk to each other on it.

        Docker's default bridge when APPS_BRIDGE=auto and the engine keeps containers on it
        apart (daemon `icc: false`): a container starts there ~45 ms sooner, since Docker sets
        up its embedded DNS server only on networks it did not make itself. Else a bridge
        network of this install's own with inter-container traffic off. The default bridge is
        asked every time (one ~1 ms call): an engine restarted with ICC on must get no app."""
        if self._settings.apps_bridge == "auto" and self._default_bridge_isolated():
            return DEFAULT_BRIDGE
        return self._ensure_own_network()

    def _default_bridge_isolated(self) -> bool:
        return default_bridge_isolated(self.client.api)

    def _ensure_own_network(self) -> str:
        name = self._settings.apps_network
        if self._network_ready:
            return name
        # Docker does not keep network names unique: two workers creating it at once would
        # make two, and every container start after that fails as "ambiguous". One at a time
        with _host_lock(self._settings.run_dir / "apps-network.lock"):
            # the engine's name filter also matches longer names: compare exactly
            found = [n for n in self.client.networks.list(names=[name]) if n.name == name]
            if any(
                labels.made_by_another_install(n.attrs.get("Labels") or {}, self.install_id)
                for n in found
            ):
                raise RuntimeFailure(
                    f"the network {name} belongs to another install with the same "
                    "INSTANCE_NAME: give this install a different INSTANCE_NAME"
                )
            if not found:
                self.client.networks.create(
                    name,
                    driver="bridge",
                    options={ICC_OPTION: "false"},
                    labels=labels.instance_labels(self._settings.instance_name, self.install_id),
                )
            for extra in _newest_first(found)[:-1]:  # left by an older, unlocked version
                with suppress(APIError):
                    extra.remove()
        self._network_ready = True
        return name

    def remove_apps_network(self) -> None:
        """Removes this install's apps network (never another install's of the same name)."""
        self._network_ready = False
        for network in self.client.networks.list(names=[self._settings.apps_network]):
            stamped = network.attrs.get("Labels") or {}
            if network.name == self._settings.apps_network and not (
                labels.made_by_another_install(stamped, self.install_id)
            ):
                network.remove()

    # Which engine this is, for what it lists (inventory.py); Swarm's says True
    in_swarm = False

    def nodes(self) -> list[Node]:
        """The nodes apps run on: this host alone here, every node on Swarm."""
        return inventory.nodes(self.client, swarm=self.in_swarm)

    def placements(self, app_id: int) -> list[Placement]:
        """Where each of the app's containers (services on Swarm) runs, of this install."""
        return inventory.placements(
            self.client,
            self._settings.instance_name,
            app_id,
            swarm=self.in_swarm,
            install_id=self.install_id,
        )

    def remove_app_network(self, app_id: int) -> bool:
        return False  # one host's apps share one network (no traffic between them: ICC off)

    def app_network_ids(self) -> list[int]:
        """The apps with a network of their own made by this install: none on one host."""
        return []

    def instance_objects(self) -> list[InstanceObject]:
        """Every container and apps network of this INSTANCE_NAME, whichever install made it."""
        name = self._settings.instance_name
        with as_runtime_failure("listing containers"):
            containers = self.client.api.containers(
                all=True, filters={"label": f"{labels.INSTANCE}={name}"}
            )
            networks = self.client.api.networks(names=[self._settings.apps_network])
        found = [
            InstanceObject(
                "container",
                str((c.get("Names") or [c["Id"][:12]])[0]).lstrip("/"),
                labels.install_id_of(dict(c.get("Labels") or {})),
            )
            for c in containers
        ]
        found += [
            InstanceObject("network", str(n["Name"]), labels.install_id_of(n.get("Labels") or {}))
            for n in networks
            if n.get("Name") == self._settings.apps_network  # the filter matches substrings
        ]
        return found

    def disable_restarts(self, container_ref: str) -> None:
        """Docker stops restarting the container (ones deployed by older versions had
        `unless-stopped`): the platform's healer must be the only restarter."""
        with as_runtime_failure("disabling Docker's restarts"):
            self.client.api.update_container(container_ref, restart_policy={"Name": "no"})

    def running_container_ids(self) -> set[str]:
        """Ids of this instance's containers that run now: one cheap call to the engine."""
        return set(self.running_endpoints())

    def running_endpoints(self) -> dict[str, Endpoint | None]:
        """Where each running container of this instance, by id, from one list call
        (one inspect per app does not scale: ~3 ms each). A paused (frozen) container runs
        for this: it is no crash; worker/prober.py finds one that stopped answering."""
        with as_runtime_failure("listing containers"):
            found = self.client.api.containers(
                filters={
                    "label": f"{labels.INSTANCE}={self._settings.instance_name}",
                    "status": ["running", "paused"],
                }
            )
        return {str(c["Id"]): _loopback(_listed_host_port(c)) for c in found}

    def state(self, container_ref: str) -> ContainerState | None:
        try:
            with engine_reachable():
                attrs: dict[str, Any] = self.client.api.inspect_container(container_ref)
        except NotFound:
            return None
        state = attrs.get("State", {})
        return ContainerState(
            status=str(state.get("Status", "unknown")),
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            restart_count=int(attrs.get("RestartCount") or 0),
            memory_limit_mb=(attrs.get("HostConfig", {}).get("Memory") or 0) // 2**20 or None,
        )

    def exit_state(self, container_ref: str) -> ContainerState | None:
        """state() of a container that stopped, once Docker has had time to say whether the
        kernel's OOM killer ended it. Under load Docker can record the exit (code 137) before
        the OOM event that caused it, and marks the OOM only then: read too early, an app
        over its memory limit would read as merely killed. For the reasons a deploy gives;
        what only has to know that it stopped (the healer) reads state()."""
        state = self.state(container_ref)
        deadline = time.monotonic() + OOM_SETTLE_SECONDS
        while state is not None and state.perhaps_oom and time.monotonic() < deadline:
            time.sleep(0.05)
            state = self.state(container_ref)
        return state

    def exposed_ports(self, container_ref: str) -> set[int]:
        """The TCP ports the container's image declares (EXPOSE)."""
        try:
            with engine_reachable():
                attrs: dict[str, Any] = self.client.api.inspect_container(container_ref)
        except NotFound:
            return set()
        declared = attrs.get("Config", {}).get("ExposedPorts") or {}
        return {int(key.split("/")[0]) for key in declared if key.endswith("/tcp")}

    def listening(self, container_ref: str) -> list[Listener] | None:
        """The container's listening sockets; None when they cannot be seen from here."""
        try:
            with engine_reachable():
                attrs: dict[str, Any] = self.client.api.inspect_container(container_ref)
        except NotFound:
            return None
        pid = int(attrs.get("State", {}).get("Pid") or 0)
        return listeners(pid) if pid > 0 else None

    def logs(
        self,
        container_ref: str,
        *,
        tail: int | None,
        timestamps: bool,
        since: datetime | None = None,
    ) -> str:
        try:
            with engine_reachable():
                raw = self.client.api.logs(
                    container_ref,
                    stdout=True,
                    stderr=True,
                    tail="all" if tail is None else tail,
                    timestamps=timestamps,
                    since=since,
                )
        except NotFound:
            return ""
        return _decode(raw)

    def tail_logs(self, container_ref: str, lines: int) -> str:
        return self.logs(container_ref, tail=lines, timestamps=False).rstrip()

    def stop(self, container_ref: str) -> None:
        try:
            with as_runtime_failure("stopping the container"):
                self.client.api.stop(container_ref, timeout=self._settings.stop_grace_seconds)
        except NotFound:
            return  # already gone counts as stopped

    def kill(self, container_ref: str) -> None:
        """SIGKILL, also for a frozen (paused) container, which no other signal reaches."""
        try:
            with as_runtime_failure("killing the container"):
                self.client.api.kill(container_ref)
        except NotFound:
            return  # already gone counts as killed
        except RuntimeFailure:
            state = self.state(container_ref)
            if state is not None and state.running:
                raise  # a container that is not running (any more) needs no kill

    def start(self, container_ref: str) -> Endpoint:
        """Starts a stopped container; returns its (possibly new) published port."""
        with as_runtime_failure("starting the container"):
            self.client.api.start(container_ref)
            attrs = self.client.api.inspect_container(container_ref)
        port = _host_port(attrs)
        if port is not None:
            return Endpoint(LOOPBACK, port)
        raise RuntimeFailure("container started but has no published port (it exited at once)")

    def remove(self, container_ref: str) -> None:
        try:
            # v: the anonymous volumes of an image's VOLUME go with it, or each redeploy
            # would leave one behind on the host's disk
            self.client.api.remove_container(container_ref, force=True, v=True)
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return
            raise RuntimeFailure(f"removing the container failed: {exc.explanation}") from exc
        except RequestsConnectionError as exc:
            raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc

    def published_endpoint(self, container_ref: str) -> Endpoint | None:
        """The host port Docker published now (it can change when Docker restarts it)."""
        try:
            with engine_reachable():
                attrs = self.client.api.inspect_container(container_ref)
        except NotFound:
            return None
        return _loopback(_host_port(attrs))

    def platform_containers(self) -> list[tuple[str, dict[str, str], str]]:
        """(id, labels, created) of every container of this instance."""
        with as_runtime_failure("listing containers"):
            found = self.client.api.containers(
                all=True, filters={"label": f"{labels.INSTANCE}={self._settings.instance_name}"}
            )
        return [
            (str(c["Id"]), dict(c.get("Labels") or {}), str(c.get("Created", 0))) for c in found
        ]

    def image_id(self, reference: str) -> str | None:
        try:
            with engine_reachable():
                return str(self.client.images.get(reference).id)
        except ImageNotFound:
            return None

    def images_in_use(self) -> set[str]:
        """Ids of the images any container on this host (ours or not) was made from."""
        with as_runtime_failure("listing containers"):
            return {str(item["ImageID"]) for item in self.client.api.containers(all=True)}

    def remove_image(self, image_id: str) -> bool:
        """Removes an image no container uses; False when Docker refuses (in use, or more
        than one name points at it)."""
        try:
            with engine_reachable():
                self.client.api.remove_image(image_id, force=False, noprune=False)
        except NotFound:
            return True
        except APIError:
            return False
        return True

    def platform_container_ids(
        self, app_id: int | None = None, deployment_id: int | None = None
    ) -> list[str]:
        """This install's containers (and unstamped ones of this instance: made before
        install ids), never those another install of the same name made; all of one app's,
        or of one of its deployments (every replica it started)."""
        filters = [f"{labels.INSTANCE}={self._settings.instance_name}"]
        if app_id is not None:
            filters.append(f"{labels.APP_ID}={app_id}")
        if deployment_id is not None:
            filters.append(f"{labels.DEPLOYMENT_ID}={deployment_id}")
        with as_runtime_failure("listing containers"):
            found = self.client.api.containers(all=True, filters={"label": filters})
        return [
            str(item["Id"])
            for item in found
            if not labels.made_by_another_install(item.get("Labels") or {}, self.install_id)
        ]


@contextmanager
def _host_lock(path: Path) -> Iterator[None]:
    """One process of this host at a time (flock: released if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _loopback(port: int | None) -> Endpoint | None:
    # Ports are published on the host's loopback only (see _create)
    return None if port is None else Endpoint(LOOPBACK, port)


def _newest_first(networks: list[Any]) -> list[Any]:
    return sorted(networks, key=lambda n: str(n.attrs.get("Created", "")), reverse=True)
