"""Docker Swarm as the engine (RUNTIME=swarm): each replica is a service with one task.

Why one service a replica, not one service an app with Swarm's rolling update: the platform
health-gates new replicas from outside (GET on the health path, which needs no tool inside
the image, as Swarm's in-container HEALTHCHECK does), switches the router to the whole new set
at once and drains the old one; that pipeline is the same on both engines. Swarm schedules
each task on a node, publishes its port there in host mode (the ingress mesh hides client
addresses and does not bind on loopback), and never restarts it (restart condition "none"):
the platform's healer replaces a task that ended, so one restarter decides, as on one host.
Stop is scale-to-0; start scales back to 1 (or forces a new task).
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Any

from docker.errors import APIError, NotFound
from docker.types import (
    ContainerSpec as SwarmContainerSpec,
)
from docker.types import (
    DriverConfig,
    EndpointSpec,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)

from minipaas.runtime import labels
from minipaas.runtime.base import (
    APP_CAPABILITIES,
    ContainerSpec,
    ContainerState,
    Endpoint,
    InstanceObject,
    RuntimeFailure,
    StartedContainer,
)
from minipaas.runtime.docker_runtime import DockerRuntime, _host_lock, engine_seconds
from minipaas.runtime.engine_errors import as_runtime_failure, engine_reachable
from minipaas.runtime.inventory import node_address
from minipaas.runtime.listening import Listener
from minipaas.runtime.port_guard import HOST_LOCK_FILE, PortGuardError, install_port_guard

log = logging.getLogger(__name__)

# A task is placed, its image pulled on its node and its container started within this
TASK_START_TIMEOUT_SECONDS = 60.0
# A task the scheduler keeps refusing (e.g. "no suitable node") fails after this, not later
UNPLACED_SECONDS = 10.0
POLL_SECONDS = 0.1
# Swarm's words for a task that has ended (it is never restarted in place)
ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
# Host ports come from this range, outside Linux's ephemeral one (32768-60999): a port the
# engine picked itself came from there and was often held by a process outside its books (a
# listener, a client's socket), failing the task ("address already in use"). Swarm's
# scheduler never puts two tasks with the same host port on one node; a port taken outside
# Swarm fails the task, and a new one tries another port
HOST_PORTS = range(20000, 30000)
PORT_RETRIES = 8
# (image, app id) -> a reference by digest every node can pull (runtime/registry.py)
ImagePublisher = Callable[[str, int], str]
# (image id) -> the engine's names of it under the cluster registry removed, not the image
NameForgetter = Callable[[str], int]


class _PortTaken(RuntimeFailure):
    pass


class SwarmRuntime(DockerRuntime):
    """The Runtime on a swarm manager; container refs are service ids or names."""

    in_swarm = True

    # Set by runtime/engine.py; None (some tests): images run as they are, on this node only
    image_publisher: ImagePublisher | None = None
    forget_cluster_names: NameForgetter | None = None

    # -- networks: one overlay network per app, so apps cannot reach each other

    def ensure_apps_network(self) -> str:
        """No shared network here; the host's setup instead (`make up` and each worker's
        start call this): app containers are kept off the host-mode ports."""
        self.guard_host_ports()
        return self._settings.apps_network

    def guard_host_ports(self) -> None:
        """Host-mode ports bind on every interface: without this, a container reaches
        another app's replica at its host's address, past the router (runtime/port_guard.py)."""
        try:
            with _host_lock(HOST_LOCK_FILE):
                install_port_guard(HOST_PORTS)
        except (PortGuardError, OSError, subprocess.SubprocessError) as exc:
            raise RuntimeFailure(f"cannot firewall the apps' host ports: {exc}") from exc

    def _app_network_name(self, app_id: int | None) -> str:
        return f"{self._settings.apps_network}-app{app_id}"

    def _app_network(self, spec: ContainerSpec) -> str:
        app_id = labels.app_id_of(spec.labels)
        name = self._app_network_name(app_id)
        # Replicas start side by side: one creates the network, the others find it
        with _host_lock(self._settings.run_dir / "apps-network.lock"):
            found = [n for n in self.client.api.networks(names=[name]) if n.get("Name") == name]
            if not found:
                self._create_app_network(name, app_id)
        return name

    def _create_app_network(self, name: str, app_id: int | None) -> None:
        try:
            self.client.api.create_network(
                name,
                driver="overlay",
                attachable=False,
                labels={
                    **labels.instance_labels(self._settings.instance_name, self.install_id),
                    labels.APP_ID: str(app_id),
                },
            )
        except APIError as exc:
            # made meanwhile by a worker on another manager (Swarm words it this way)
            if exc.status_code != 409 and "conflicts" not in str(exc.explanation):
                raise

    def remove_app_network(self, app_id: int) -> bool:
        """The deleted app's network (after its services: their tasks left it by then);
        whether it was removed now."""
        try:
            with engine_reachable():
                self.client.api.remove_network(self._app_network_name(app_id))
        except (NotFound, APIError) as exc:
            if not isinstance(exc, NotFound):
                log.warning("the network of app %s stays for now: %s", app_id, exc)
            return False
        return True

    def app_network_ids(self) -> list[int]:
        """The apps with a network of their own made by this install (the reconciler removes
        those of deleted apps: a crash between an app's deletion and its network's leaves one)."""
        with as_runtime_failure("listing networks"):
            networks = self._own_networks()
        found = {labels.app_id_of(n.get("Labels") or {}) for n in networks}
        return sorted(app_id for app_id in found if app_id is not None)

    def remove_apps_network(self) -> None:
        for network in self._own_networks():
            try:
                self.client.api.remove_network(network["Id"])
            except (NotFound, APIError):
                continue  # still in use, or gone: the next sweep tries again

    def _own_networks(self) -> list[dict[str, Any]]:
        found = self.client.api.networks(
            filters={"label": f"{labels.INSTANCE}={self._settings.instance_name}"}
        )
        return [
            n
            for n in found
            if n.get("Driver") == "overlay"
            and not labels.made_by_another_install(n.get("Labels") or {}, self.install_id)
        ]

    # -- one replica: a service with one task

    def run_container(self, spec: ContainerSpec) -> StartedContainer:
        for attempt in range(PORT_RETRIES):
            try:
                return self._run_service(spec)
            except _PortTaken as taken:
                log.info("host port %s taken on the node, another one (%d)", taken, attempt + 1)
        return self._run_service(spec)

    def _run_service(self, spec: ContainerSpec) -> StartedContainer:
        with as_runtime_failure("starting the replica's service"):
            image = spec.image
            if self.image_publisher is not None:
                image = self.image_publisher(spec.image, labels.app_id_of(spec.labels) or 0)
            network = self._app_network(spec)
            try:
                service_id = self._create_service(spec, image, network)
            except APIError as exc:
                if exc.status_code != 409:
                    raise
                # A leftover of an interrupted attempt of the same deployment
                self.remove(spec.name)
                service_id = self._create_service(spec, image, network)
        try:
            endpoint = self._wait_for_task(service_id, after=None)
        except RuntimeFailure:
            self.remove(service_id)
            raise
        return StartedContainer(service_id, spec.name, endpoint.port, endpoint.address)

    def _create_service(self, spec: ContainerSpec, image: str, network: str) -> str:
        settings = self._settings
        stamped = {**spec.labels, **self._stamp()}
        container = SwarmContainerSpec(
            image,
            command=spec.command,
            env=spec.env,
            labels=stamped,
            init=True,  # signals reach the app even when it ignores SIGTERM as PID 1
            stop_grace_period=int(settings.stop_grace_seconds * 1e9),
            # Hardening is fixed here; nothing from the request reaches these options
            cap_drop=["ALL"],
            cap_add=APP_CAPABILITIES,
        )
        resources = Resources(cpu_limit=int(spec.cpus * 1e9), mem_limit=spec.memory_mb * 2**20)
        resources["Limits"]["Pids"] = spec.pids
        template = TaskTemplate(
            container,
            resources=resources,
            restart_policy=RestartPolicy(condition="none"),
            log_driver=DriverConfig(
                "json-file",
                {"max-size": settings.log_max_size, "max-file": str(settings.log_max_files)},
            ),
            networks=[network],
        )
        # No virtual IP: nothing reaches a replica through the overlay, and one address a
        # replica, not two, in the app network's /24
        endpoint = EndpointSpec(mode="dnsrr")
        endpoint["Ports"] = [
            {
                "Protocol": "tcp",
                "TargetPort": spec.internal_port,
                "PublishedPort": secrets.choice(HOST_PORTS),
                "PublishMode": "host",
            }
        ]
        created = self.client.api.create_service(
            template,
            name=spec.name,
            labels=stamped,
            mode=ServiceMode("replicated", replicas=1),
            endpoint_spec=endpoint,
        )
        return str(created["ID"])

    def _tasks(self, service_ref: str) -> list[dict[str, Any]]:
        """The service's tasks, newest first."""
        found: list[dict[str, Any]] = self.client.api.tasks(filters={"service": service_ref})
        return sorted(found, key=lambda t: _sortable(t.get("CreatedAt")), reverse=True)

    def _wait_for_task(self, service_ref: str, *, after: str | None) -> Endpoint:
        """The endpoint of the service's newest task once it runs (a task other than `after`)."""
        deadline = time.monotonic() + TASK_START_TIMEOUT_SECONDS
        last_error, erring_since = "", None
        while time.monotonic() < deadline:
            if erring_since is not None and time.monotonic() - erring_since > UNPLACED_SECONDS:
                raise RuntimeFailure(f"the replica's task cannot start: {last_error}")
            for task in self._tasks(service_ref):
                if task["ID"] == after:
                    break  # the new task is not listed yet
                status = task.get("Status") or {}
                state = str(status.get("State", ""))
                if state == "running":
                    endpoint = self._endpoint(task)
                    if endpoint is not None:
                        return endpoint
                elif state in ENDED:
                    if "address already in use" in str(status.get("Err", "")):
                        raise _PortTaken(_published(task))
                    raise RuntimeFailure(self._ended_message(service_ref, task))
                elif "port already in use" in str(status.get("Err", "")):
                    raise _PortTaken(_published(task))  # Swarm's books: no node had it free
                elif status.get("Err"):
                    last_error = str(status["Err"])  # e.g. "no suitable node"
                    erring_since = erring_since or time.monotonic()
                break  # only the newest task counts
            time.sleep(POLL_SECONDS)
        raise RuntimeFailure(
            f"the replica's task did not start within {TASK_START_TIMEOUT_SECONDS:.0f} s"
            + (f": {last_error}" if last_error else "")
        )

    def _ended_message(self, service_ref: str, task: dict[str, Any]) -> str:
        status = task.get("Status") or {}
        code = ((status.get("ContainerStatus") or {}).get("ExitCode")) or "unknown"
        why = status.get("Err") or status.get("Message") or "ended"
        logs = self.tail_logs(service_ref, 20)
        return (
            f"the replica's task ended at once ({why}, exit code {code}); last log lines:\n{logs}"
        )

    def _endpoint(
        self, task: dict[str, Any], addresses: dict[str, str] | None = None
    ) -> Endpoint | None:
        """Where the task's port answers: its node's address and the IPv4 host port (Swarm
        lists 0.0.0.0 first, then ::, whose port may differ)."""
        ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
        published = [p.get("PublishedPort") for p in ports if p.get("PublishedPort")]
        if not published:
            return None
        node_id = str(task.get("NodeID", ""))
        address = (addresses if addresses is not None else self._node_addresses()).get(node_id)
        if not address:
            raise RuntimeFailure(f"swarm node {node_id} has no address the router can reach")
        return Endpoint(address, int(published[0]))

    def _node_addresses(self) -> dict[str, str]:
        """Every node's address, by id, from one call."""
        return {str(node["ID"]): node_address(node) for node in self.client.api.nodes()}

    def _current_task(self, service_ref: str) -> dict[str, Any] | None:
        """The task meant to run (desired state running), else the newest."""
        return _current(self._tasks(service_ref))

    def _running_task(self, service_ref: str) -> dict[str, Any] | None:
        task = self._current_task(service_ref)
        return task if task is not None and _runs(task) else None

    def _local_container(self, task: dict[str, Any] | None) -> str | None:
        """The task's container id when it runs on this node (else None: not inspectable)."""
        if task is None or task.get("NodeID") != self._node_id():
            return None
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        return str(container) if container else None

    def _node_id(self) -> str:
        return str(self.client.info()["Swarm"]["NodeID"])

    def _scale(
        self, service_ref: str, replicas: int, *, force: bool = False, new_port: bool = False
    ) -> None:
        inspected = self.client.api.inspect_service(service_ref)
        spec = inspected["Spec"]
        template = spec["TaskTemplate"]
        if force:
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        if new_port:
            for port in (spec.get("EndpointSpec") or {}).get("Ports") or []:
                port["PublishedPort"] = secrets.choice(HOST_PORTS)
        self.client.api.update_service(
            service_ref,
            inspected["Version"]["Index"],
            task_template=template,
            name=spec["Name"],
            labels=spec.get("Labels"),
            mode=ServiceMode("replicated", replicas=replicas),
            endpoint_spec=spec.get("EndpointSpec"),
        )

    def start(self, container_ref: str) -> Endpoint:
        """One new task (back from 0, or in place of one that ended); returns where it
        answers. A running task is left as it is, as starting a running container is a no-op
        on one host. Forced otherwise: with restart condition "none" Swarm does not refill a
        slot whose task ended, even on a scale from 0 back to 1. A task that does not start
        is scaled away, so it cannot start later outside the platform's books."""
        with as_runtime_failure("starting the replica"):
            running = self._running_task(container_ref)
            endpoint = self._endpoint(running) if running else None
            if endpoint is not None:
                return endpoint
            try:
                return self._new_task(container_ref)
            except RuntimeFailure:
                with suppress(APIError, NotFound):
                    self._scale(container_ref, 0)
                raise

    def _new_task(self, container_ref: str) -> Endpoint:
        """Forces a new task; on its port taken meanwhile, another port, a few times."""
        for attempt in range(PORT_RETRIES):
            before = self._tasks(container_ref)
            self._scale(container_ref, 1, force=True, new_port=attempt > 0)
            previous = before[0]["ID"] if before else None
            try:
                return self._wait_for_task(container_ref, after=previous)
            except _PortTaken:
                log.info("host port taken on the node, another one (%d)", attempt + 1)
        raise RuntimeFailure(f"no free host port on the node after {PORT_RETRIES} tries")

    def stop(self, container_ref: str) -> None:
        try:
            with as_runtime_failure("stopping the replica"):
                self._scale(container_ref, 0)
                deadline = time.monotonic() + self._settings.stop_grace_seconds + 15
                while time.monotonic() < deadline and self._running_task(container_ref):
                    time.sleep(POLL_SECONDS)
        except NotFound:
            return

    def kill(self, container_ref: str) -> None:
        """SIGKILL where the task runs on this node; elsewhere its task is stopped."""
        try:
            with engine_reachable():
                local = self._local_container(self._running_task(container_ref))
        except NotFound:
            return
        if local is None:
            self.stop(container_ref)
            return
        try:
            with as_runtime_failure("killing the replica"):
                self.client.api.kill(local)
        except NotFound:
            return  # gone already counts as killed
        except RuntimeFailure:
            if self._running_task(container_ref) is not None:
                raise  # a task that is not running (any more) needs no kill

    def remove(self, container_ref: str) -> None:
        """Removes the service and waits (bounded) until this node's containers of it are
        gone, as a removal on one host is done when it returns (ports, images freed)."""
        try:
            with as_runtime_failure("removing the replica's service"):
                service_id = str(self.client.api.inspect_service(container_ref)["ID"])
                self.client.api.remove_service(service_id)
        except NotFound:
            return
        deadline = time.monotonic() + self._settings.stop_grace_seconds + 10
        left = {"label": f"com.docker.swarm.service.id={service_id}"}
        with engine_reachable():
            while time.monotonic() < deadline and self.client.api.containers(
                all=True, filters=left
            ):
                time.sleep(POLL_SECONDS)

    def disable_restarts(self, container_ref: str) -> None:
        return  # made with restart condition "none": Swarm never restarts a task

    def state(self, container_ref: str) -> ContainerState | None:
        try:
            with engine_reachable():
                inspected = self.client.api.inspect_service(container_ref)
                tasks = self._tasks(container_ref)
        except NotFound:
            return None
        limits = inspected["Spec"]["TaskTemplate"].get("Resources", {}).get("Limits", {})
        memory_mb = int(limits.get("MemoryBytes") or 0) // 2**20 or None
        task = _current(tasks)
        status = (task or {}).get("Status") or {}
        state = str(status.get("State", "created"))
        if task is not None and _runs(task):
            return ContainerState("running", True, 0, False, 0, memory_mb)
        code = int((status.get("ContainerStatus") or {}).get("ExitCode") or 0)
        oom = False
        local = self._local_container(task)
        if local is not None:
            inspected_local = super().state(local)
            oom = bool(inspected_local and inspected_local.oom_killed)
        word = "exited" if state in ENDED else "created"
        return ContainerState(word, False, code, oom, 0, memory_mb)

    def published_endpoint(self, container_ref: str) -> Endpoint | None:
        try:
            with engine_reachable():
                task = self._running_task(container_ref)
                return self._endpoint(task) if task else None
        except NotFound:
            return None

    def running_endpoints(self) -> dict[str, Endpoint | None]:
        """Each running replica of this instance, by service id: two list calls."""
        with as_runtime_failure("listing services"):
            services = {s["ID"] for s in self._services()}
            running = self._running_tasks(services)
            addresses = self._node_addresses() if running else {}
            return {service: self._endpoint(task, addresses) for service, task in running.items()}

    def running_container_ids(self) -> set[str]:
        """Services of this instance with a running task: two list calls (the healer's)."""
        with as_runtime_failure("listing services"):
            return set(self._running_tasks({s["ID"] for s in self._services()}))

    def _running_tasks(self, services: set[str]) -> dict[str, dict[str, Any]]:
        tasks = self.client.api.tasks(filters={"desired-state": "running"})
        return {
            str(t["ServiceID"]): t for t in tasks if t.get("ServiceID") in services and _runs(t)
        }

    def exposed_ports(self, container_ref: str) -> set[int]:
        try:
            with engine_reachable():
                spec = self.client.api.inspect_service(container_ref)["Spec"]
                image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
                attrs = self.client.api.inspect_image(image)
        except NotFound:
            return set()
        declared = attrs.get("Config", {}).get("ExposedPorts") or {}
        return {int(key.split("/")[0]) for key in declared if key.endswith("/tcp")}

    def listening(self, container_ref: str) -> list[Listener] | None:
        try:
            with engine_reachable():
                local = self._local_container(self._running_task(container_ref))
        except NotFound:
            return None
        return super().listening(local) if local else None

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
                chunks = self.client.api.service_logs(
                    container_ref,
                    stdout=True,
                    stderr=True,
                    timestamps=timestamps,
                    tail="all" if tail is None else tail,
                    since=int(since.timestamp()) if since else 0,
                    is_tty=False,
                )
                raw = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
        except NotFound:
            return ""
        return raw.decode("utf-8", errors="replace")

    # -- what this instance made

    def _services(self, extra: list[str] | None = None) -> list[dict[str, Any]]:
        wanted = [f"{labels.INSTANCE}={self._settings.instance_name}", *(extra or [])]
        found: list[dict[str, Any]] = self.client.api.services(filters={"label": wanted})
        return found

    def platform_containers(self) -> list[tuple[str, dict[str, str], str]]:
        with as_runtime_failure("listing services"):
            found = self._services()
        return [
            (str(s["ID"]), dict(s["Spec"].get("Labels") or {}), _epoch(s.get("CreatedAt")))
            for s in found
        ]

    def platform_container_ids(
        self, app_id: int | None = None, deployment_id: int | None = None
    ) -> list[str]:
        extra = []
        if app_id is not None:
            extra.append(f"{labels.APP_ID}={app_id}")
        if deployment_id is not None:
            extra.append(f"{labels.DEPLOYMENT_ID}={deployment_id}")
        with as_runtime_failure("listing services"):
            found = self._services(extra)
        return [
            str(s["ID"])
            for s in found
            if not labels.made_by_another_install(s["Spec"].get("Labels") or {}, self.install_id)
        ]

    def instance_objects(self) -> list[InstanceObject]:
        with as_runtime_failure("listing services"):
            services = self._services()
            networks = self.client.api.networks(
                filters={"label": f"{labels.INSTANCE}={self._settings.instance_name}"}
            )
        found = [
            InstanceObject(
                "container",
                str(s["Spec"]["Name"]),
                labels.install_id_of(dict(s["Spec"].get("Labels") or {})),
            )
            for s in services
        ]
        found += [
            InstanceObject("network", str(n["Name"]), labels.install_id_of(n.get("Labels") or {}))
            for n in networks
        ]
        return found

    def remove_image(self, image_id: str) -> bool:
        """The registry's names go first: an image named in two repositories is never
        removed by id (the registry keeps its copy; a node pulls it again by digest)."""
        if self.forget_cluster_names is not None:
            try:
                self.forget_cluster_names(image_id)
            except RuntimeFailure:
                return False
        return super().remove_image(image_id)

    def images_in_use(self) -> set[str]:
        """Images of containers on this node and of every service (resolved where local)."""
        in_use = super().images_in_use()
        with as_runtime_failure("listing services"):
            for service in self.client.api.services():
                image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
                local = self.image_id(image)
                if local:
                    in_use.add(local)
        return in_use


def _epoch(created: object) -> str:
    """Swarm's RFC 3339 time (nanoseconds) as the plain engine's seconds since the epoch."""
    seconds = engine_seconds(created)
    return "" if seconds is None else str(int(seconds))


def _current(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of a service's tasks (newest first), the one meant to run, else the newest."""
    meant = [t for t in tasks if t.get("DesiredState") == "running"]
    return (meant or tasks)[0] if tasks else None


def _runs(task: dict[str, Any]) -> bool:
    """Runs and is meant to: a task on a node that went down keeps its last reported state
    ("running") while Swarm has set its desired state to shutdown."""
    state = (task.get("Status") or {}).get("State")
    return state == "running" and task.get("DesiredState") == "running"


def _sortable(created: object) -> str:
    """RFC 3339 with the fraction padded: Docker trims its trailing zeros (".1Z" < ".12Z")."""
    text = str(created or "").rstrip("Z")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(9, '0')}"


def _published(task: dict[str, Any]) -> int | None:
    """The host port a task asked for (for the log)."""
    ports = ((task.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []
    return next((int(p["PublishedPort"]) for p in ports if p.get("PublishedPort")), None)
