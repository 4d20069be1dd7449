"""Image builds from a checked context, with Docker's classic builder.

The classic builder enforces `container_limits` on every RUN step (BuildKit ignores memory
limits: moby/buildkit#593). Closing the stream does not stop it, so a cancel or a deadline
kills the step's container.

Each build's RUN steps run on a network of the build's own (`build_network`, inter-container
traffic off): a step reaches neither other builds' steps nor containers on Docker's default
bridge, and the containers attached to that network (or created to be) are exactly the
build's steps. That is how they are found: never from the build's output alone, which the
steps can print anything to (a "Running in <id>" line wakes the pids limiter up, which asks
the engine whether that container is on the build's network).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from minipaas.runtime import image_turns, labels
from minipaas.runtime.base import EngineUnavailable, RuntimeFailure
from minipaas.runtime.docker_runtime import DockerRuntime, engine_seconds
from minipaas.runtime.engine_errors import as_runtime_failure

log = logging.getLogger(__name__)

_RUNNING_IN = re.compile(r"---> Running in ([0-9a-f]{12,64})")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_BUILT = re.compile(r"^Successfully built ([0-9a-f]{12,64})")
# How often the watcher asks whether to stop (a cancel ends the step within this, plus a kill),
# and the pids limiter looks at the build's network when no line woke it
_WATCH_INTERVAL = 0.5
# The pids limiter's pause between two looks (a step printing "Running in" lines without end
# costs the engine one list call per pause)
_LIMIT_INTERVAL = 0.02
# Output is handed on in batches: one database write per batch, not per line
_FLUSH_LINES = 200
_FLUSH_SECONDS = 0.25
# Output without a newline this long is handed on as a line of its own: a step printing
# without end (`yes | tr -d '\n'`) would otherwise grow one string in this process
_MAX_PARTIAL_CHARS = 64 * 1024
_MB = 1024 * 1024


@dataclass(frozen=True)
class BuildSpec:
    context: Path  # a plain tar, already checked
    tag: str
    dockerfile: str
    build_args: dict[str, str]
    memory_mb: int
    cpus: float
    timeout_seconds: int
    pids: int = 1024


@dataclass(frozen=True)
class BuildResult:
    image_id: str | None
    error: str | None = None
    failed_step: str | None = None
    stopped: str | None = None  # why it was stopped (cancel, deadline), if it was
    # The image a failed build's failing RUN step stood on, when the build itself committed
    # it (the engine says so, never the build's output): remove_failed_steps()
    leftover_image: str | None = None


def container_limits(memory_mb: int, cpus: float) -> dict[str, Any]:
    """Each RUN step's container: memory without swap, CPU shares and as many cores."""
    cores = max(1, math.ceil(cpus))
    return {
        "memory": memory_mb * _MB,
        "memswap": memory_mb * _MB,
        "cpushares": max(2, int(1024 * cpus)),
        "cpusetcpus": f"0-{cores - 1}" if cores > 1 else "0",
    }


class _Progress:
    """What the output said so far: the step, the last lines."""

    def __init__(self, on_step_start: Callable[[str], None] = lambda _: None) -> None:
        self.on_step_start = on_step_start  # cheap: called on the reader's path
        self.step: str | None = None
        self.image_id: str | None = None
        self.tail: list[str] = []

    def saw(self, line: str) -> None:
        if _STEP.match(line):
            self.step = line
        if match := _RUNNING_IN.search(line):  # the builder's, or a step's own: only a hint
            self.on_step_start(match.group(1))
        if match := _BUILT.match(line):
            self.image_id = match.group(1)
        self.tail = [*self.tail[-19:], line]


class _Lines:
    """Splits the stream's text into lines and hands them on in batches: when a batch is
    full, or (the watcher's tick) when lines have waited a moment while a step is silent."""

    def __init__(self, sink: Callable[[list[str]], None], progress: _Progress) -> None:
        self.sink = sink
        self.progress = progress
        self.partial = ""
        self.batch: list[str] = []
        self.flushed = time.monotonic()
        self.lock = threading.Lock()  # the reader and the watcher both flush

    def add(self, text: str) -> None:
        with self.lock:
            text = self.partial + text.replace("\r\n", "\n")
            *lines, self.partial = text.split("\n")
            if len(self.partial) > _MAX_PARTIAL_CHARS:
                lines.append(self.partial)
                self.partial = ""
            for line in lines:
                self.progress.saw(line)
                self.batch.append(line)
        if len(self.batch) >= _FLUSH_LINES:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> None:
        if time.monotonic() - self.flushed > _FLUSH_SECONDS:
            self.flush()

    def flush(self, final: bool = False) -> None:
        with self.lock:
            if final and self.partial:
                self.progress.saw(self.partial)
                self.batch.append(self.partial)
                self.partial = ""
            if self.batch:
                self.sink(self.batch)
                self.batch = []
            self.flushed = time.monotonic()


class _PidsLimiter(threading.Thread):
    """Sets the pids limit on each step's container (the classic builder takes no such
    limit): a fork bomb in a RUN step would otherwise have only the memory limit between it
    and the host's process ids (kernel.pid_max is 32,768 on many hosts).

    The builder prints "Running in <id>" after it creates a step's container and before it
    starts it: such a line wakes this thread, which limits that container at once if the
    engine says it is one of this build's steps (its network mode is the build's network; a
    step printing another id gets nothing). It also limits every container on the build's
    network not limited yet, then and every _WATCH_INTERVAL, so a step's own output can
    neither hide a step nor make more than two engine calls per _LIMIT_INTERVAL. A step's
    container that cannot be limited is killed: the build fails rather than run unbounded."""

    def __init__(self, api: docker.APIClient, network: StepNetwork, pids: int) -> None:
        super().__init__(name="build-pids", daemon=True)
        self.api = api
        self.network = network
        self.pids = pids
        self.failure: str | None = None
        self.done = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._named: str | None = None  # the newest id a line named, not looked at yet
        self._limited: set[str] = set()

    def named(self, container: str) -> None:
        with self._lock:
            self._named = container
        self._wake.set()

    def stop(self) -> None:
        self.done.set()
        self._wake.set()  # not a wait of up to _WATCH_INTERVAL at the end of every build

    def run(self) -> None:
        while not self.done.is_set():
            self._wake.wait(_WATCH_INTERVAL)
            self._wake.clear()
            if self.done.is_set():
                return
            with self._lock:
                named, self._named = self._named, None
            try:
                if named is not None:
                    self._limit_named(named)
                for container in step_containers(self.api, self.network):
                    if container["Id"] not in self._limited and container["State"] in _LIVE:
                        self._limit(container["Id"])
            except Exception:  # the engine's hiccup must not end the thread
                log.warning("build steps: pids limit not set", exc_info=True)
            time.sleep(_LIMIT_INTERVAL)

    def _limit_named(self, container: str) -> None:
        """The container a line named, before it starts, if it is this build's step."""
        try:
            attrs: dict[str, Any] = self.api.inspect_container(container)
        except (DockerException, OSError):  # gone, ambiguous, or no container at all
            return
        mode = (attrs.get("HostConfig") or {}).get("NetworkMode")
        if mode == self.network.name and attrs["Id"] not in self._limited:
            self._limit(attrs["Id"])

    def _limit(self, container: str) -> None:
        try:
            # docker-py's update_container has no pids parameter; the engine's API does (1.40+)
            url = self.api._url("/containers/{0}/update", container)
            self.api._raise_for_status(self.api._post_json(url, data={"PidsLimit": self.pids}))
            self._limited.add(container)
        except Exception as exc:
            if not self._still_running(container):
                return  # a quick step ended (and went) meanwhile: nothing runs unbounded
            self.failure = f"the step's processes could not be limited (BUILD_PIDS): {exc}"
            with contextlib.suppress(Exception):
                self.api.kill(container)

    def _still_running(self, container: str) -> bool:
        try:
            return bool(self.api.inspect_container(container)["State"]["Running"])
        except NotFound:
            return False
        except Exception:
            return True  # unknown: treated as running, so it is killed


class _Watcher(threading.Thread):
    """Kills the build's running steps once `stop_reason` gives a reason."""

    def __init__(
        self,
        api: docker.APIClient,
        network: StepNetwork,
        lines: _Lines,
        stop_reason: Callable[[], str | None],
    ) -> None:
        super().__init__(name="build-watcher", daemon=True)
        self.api = api
        self.network = network
        self.lines = lines
        self.stop_reason = stop_reason
        self.reason: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(_WATCH_INTERVAL):
            try:
                self.lines.flush_if_due()  # a silent step: what came before it shows now
            except Exception:
                log.warning("build log lines not written yet", exc_info=True)
            if self.reason is None:
                try:
                    self.reason = self.stop_reason()
                except Exception:  # a database hiccup: ask again at the next tick
                    log.warning("build watcher could not check for a stop", exc_info=True)
            if self.reason is not None:
                # Between steps nothing runs: the next step's container is killed next tick
                with contextlib.suppress(APIError, DockerException):
                    for container in step_containers(self.api, self.network):
                        if container["State"] in _LIVE:
                            with contextlib.suppress(APIError, DockerException):
                                self.api.kill(container["Id"])


# Tries at removing a build's network once its steps are gone (0.25 s apart)
_NETWORK_REMOVAL_TRIES = 8
# How the Linux bridges of build networks begin (no other interface's name does)
BUILD_BRIDGE_PREFIX = "mpbuild-"
# A step's container in these states may run (or is about to)
_LIVE = frozenset({"created", "running", "paused", "restarting"})


@dataclass(frozen=True)
class StepNetwork:
    """Where a build's RUN steps run: `name` is what the engine attaches them to. `id` is
    None when it was never made (a build without steps): a step that comes all the same
    fails, as the engine cannot attach it, and never falls back to its default bridge. The
    name ends in a random token, so no one can make it ahead of the build."""

    name: str
    id: str | None


def step_containers(api: docker.APIClient, network: StepNetwork) -> list[dict[str, Any]]:
    """The build's steps, newest first: the containers attached to its network (or created
    to be), as nothing else ever is (a step cannot reach the engine to attach one)."""
    if network.id is None:
        return []
    # The filter matches a container by its network's name exactly, or an id prefix
    found = api.containers(all=True, filters={"network": network.name})
    mine = []
    for container in found:
        attached = ((container.get("NetworkSettings") or {}).get("Networks") or {}).get(
            network.name
        )
        # A created container's network has no id yet; a started one's is this network's
        if attached is not None and (attached.get("NetworkID") or network.id) == network.id:
            mine.append(container)
    return sorted(mine, key=lambda c: int(c.get("Created") or 0), reverse=True)


def bridge_name(network: str) -> str:
    """The Linux bridge of a build's network: BUILD_BRIDGE_PREFIX and a digest of the
    network's name (15 characters at most), so the host's firewall can match every build's
    steps with one pattern (runtime/port_guard.py)."""
    digest = hashlib.sha256(network.encode()).hexdigest()
    return f"{BUILD_BRIDGE_PREFIX}{digest[: 15 - len(BUILD_BRIDGE_PREFIX)]}"


@contextmanager
def build_network(
    runtime: DockerRuntime, build_key: str, *, needed: bool = True
) -> Iterator[StepNetwork]:
    """The network for a build's RUN steps, made before the build when it has steps to run
    and removed, with what is left on it, when the caller is done: after the build's outcome
    is recorded, as removing it takes ~0.2 s. `build_key` names the build (its label)."""
    name = f"{build_key}-{secrets.token_hex(4)}"
    network = StepNetwork(name, _open(runtime, name, build_key) if needed else None)
    try:
        yield network
    finally:
        if network.id is not None:
            try:
                _close(runtime.client.api, network)
            except Exception:  # the outcome is recorded; remove_leftover_build_networks retries
                log.warning("build network %s not removed", name, exc_info=True)


def _open(runtime: DockerRuntime, name: str, build_key: str) -> str:
    """Makes the network; returns its id. Inter-container traffic is off: a step is alone."""
    stamped = labels.instance_labels(runtime.instance_name, runtime.install_id)
    created = runtime.client.api.create_network(
        name,
        driver="bridge",
        options={
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.name": bridge_name(name),
        },
        labels={**stamped, labels.BUILD: build_key},
        check_duplicate=True,
    )
    return str(created["Id"])


def _close(api: docker.APIClient, network: StepNetwork) -> bool:
    """Removes the network's steps (running or not), then the network; True once gone."""
    with as_runtime_failure("removing a build's steps"):
        for container in step_containers(api, network):
            with contextlib.suppress(NotFound):
                api.remove_container(container["Id"], force=True)
    # The engine lets go of a removed container's endpoint a moment later ("has active
    # endpoints"): a few tries, then remove_leftover_build_networks' next pass
    for attempt in range(_NETWORK_REMOVAL_TRIES):
        try:
            api.remove_network(network.id)
            return True
        except NotFound:
            return True
        except (DockerException, OSError) as exc:
            if attempt + 1 == _NETWORK_REMOVAL_TRIES:
                log.warning("build network %s not removed yet: %s", network.name, exc)
            else:
                time.sleep(0.25)
    return False


def build_networks(runtime: DockerRuntime, build_key: str | None = None) -> list[BuildNetwork]:
    """This install's build networks that exist now (of one build, with `build_key`)."""
    wanted = [f"{k}={v}" for k, v in labels.instance_labels(runtime.instance_name).items()]
    wanted.append(labels.BUILD if build_key is None else f"{labels.BUILD}={build_key}")
    with as_runtime_failure("listing build networks"):
        listing = runtime.client.api.networks(filters={"label": wanted})
    found = []
    for listed in listing:
        stamped = listed.get("Labels") or {}
        if labels.made_by_another_install(stamped, runtime.install_id):
            continue
        network = StepNetwork(str(listed["Name"]), str(listed["Id"]))
        found.append(BuildNetwork(network, str(stamped.get(labels.BUILD, ""))))
    return found


@dataclass(frozen=True)
class BuildNetwork:
    network: StepNetwork
    build_key: str  # whose: build_network's argument


def close_build_networks(runtime: DockerRuntime, build_key: str | None = None) -> list[str]:
    """Removes this install's build networks (of one build, with `build_key`) with their
    steps, for a builder that died; the names of those removed."""
    return [
        found.network.name
        for found in build_networks(runtime, build_key)
        if _close(runtime.client.api, found.network)
    ]


_docker_roots: dict[int, Path | None] = {}


def _docker_root(runtime: DockerRuntime) -> Path | None:
    """Where the engine keeps images (asked once per runtime: `docker info` is slow)."""
    if id(runtime) not in _docker_roots:
        try:
            root = str(runtime.client.info().get("DockerRootDir") or "")
        except (DockerException, OSError):
            return None
        _docker_roots[id(runtime)] = Path(root) if root else None
    return _docker_roots[id(runtime)]


def free_disk_mb(runtime: DockerRuntime, data_dir: Path) -> dict[str, int]:
    """Free space where the upload sits and where Docker keeps images, in MB."""
    found = {"DATA_DIR": shutil.disk_usage(data_dir).free // _MB}
    root = _docker_root(runtime)
    if root is not None and root.exists():
        found[f"Docker's root ({root})"] = shutil.disk_usage(root).free // _MB
    return found


def build_triggers(runtime: DockerRuntime, reference: str) -> list[str] | None:
    """The image's ONBUILD triggers (a build FROM it runs them); None when it cannot be
    looked at (not on this host, or the engine did not answer)."""
    try:
        attrs: dict[str, Any] = runtime.client.api.inspect_image(reference)
    except (DockerException, OSError, RuntimeFailure):  # EngineUnavailable included
        return None
    return [str(trigger) for trigger in (attrs.get("Config") or {}).get("OnBuild") or []]


def build_image(
    runtime: DockerRuntime,
    spec: BuildSpec,
    *,
    network: StepNetwork,
    on_lines: Callable[[list[str]], None],
    stop_reason: Callable[[], str | None],
) -> BuildResult:
    """Runs the build, its RUN steps on `network` (from build_network), handing its output
    on line by line; never raises for a failed step."""
    try:
        # A client of its own: a step may print nothing for minutes, past the usual timeout.
        # The runtime's API version: not asked of the engine again for every build (10-40 ms)
        api = docker.from_env(
            version=runtime.client.api.api_version, timeout=spec.timeout_seconds + 60
        ).api
    except DockerException as exc:
        raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc
    try:
        return _run(runtime, api, spec, network, on_lines, stop_reason)
    finally:
        api.close()


def _run(
    runtime: DockerRuntime,
    api: docker.APIClient,
    spec: BuildSpec,
    network: StepNetwork,
    on_lines: Callable[[list[str]], None],
    stop_reason: Callable[[], str | None],
) -> BuildResult:
    limiter = _PidsLimiter(api, network, spec.pids)
    progress = _Progress(limiter.named)
    lines = _Lines(on_lines, progress)
    if network.id is not None:  # else no step can run
        limiter.start()
    watcher = _Watcher(api, network, lines, stop_reason)
    watcher.start()
    started = time.time()
    error: str | None = None
    try:
        # Image removals by any install on the host wait until this build ends (image_turns)
        with image_turns.building(), spec.context.open("rb") as context:
            for chunk in _stream(api, spec, network, context):
                if "stream" in chunk:
                    lines.add(str(chunk["stream"]))
                elif "error" in chunk:
                    error = str(chunk.get("error") or "the build failed").strip()
                elif isinstance(chunk.get("aux"), dict) and "ID" in chunk["aux"]:
                    progress.image_id = str(chunk["aux"]["ID"])
                elif "status" in chunk:  # a pull of the base image (refused here: no registry)
                    lines.add(f"{chunk['status']}\n")
    except APIError as exc:
        error = str(getattr(exc, "explanation", None) or exc)
    except (DockerException, OSError) as exc:
        error = f"the Docker engine broke off the build: {exc}"
    finally:
        watcher.done.set()
        limiter.stop()
        watcher.join(timeout=5)
        if limiter.is_alive():
            limiter.join(timeout=5)
        lines.flush(final=True)
    if limiter.failure is not None:
        error = limiter.failure
    return _result(runtime, api, spec, network, progress, error, watcher.reason, started)


def _stream(
    api: docker.APIClient, spec: BuildSpec, network: StepNetwork, context: Any
) -> Iterator[dict[str, Any]]:
    yield from api.build(
        fileobj=context,
        custom_context=True,
        tag=spec.tag,
        dockerfile=spec.dockerfile,
        buildargs=spec.build_args or None,
        container_limits=container_limits(spec.memory_mb, spec.cpus),
        # RUN steps on the build's own network, not Docker's default bridge
        network_mode=network.name,
        # No labels: the classic builder commits one more layer for them, and the image GC
        # knows the platform's builds by the image ids the builds table records
        rm=True,
        # A failed step's container stays until we read why it failed (OOM, exit code)
        forcerm=False,
        pull=False,
        decode=True,
        timeout=spec.timeout_seconds + 60,
    )


def _result(
    runtime: DockerRuntime,
    api: docker.APIClient,
    spec: BuildSpec,
    network: StepNetwork,
    progress: _Progress,
    error: str | None,
    stopped: str | None,
    started: float,
) -> BuildResult:
    if error is None and stopped is None:
        image_id = runtime.image_id(spec.tag)
        if image_id is not None:
            return BuildResult(image_id=image_id)
        error = "the build ended without an image"
    why = _step_failure(api, network, error or "stopped", spec.memory_mb)
    leftover = _committed_under_failed_step(api, network, started)
    if stopped is not None:
        return BuildResult(
            image_id=None,
            error=stopped,
            failed_step=progress.step,
            stopped=stopped,
            leftover_image=leftover,
        )
    last = "\n".join(line for line in progress.tail[-10:] if line.strip())
    message = f"{progress.step or 'the build'} failed: {why}"
    if progress.step is not None and " : FROM " in progress.step:
        message += (
            "\nbase images are never pulled: the image named in FROM must be on this host "
            "(build or load it there first, or use one that is)"
        )
    if last:
        message += f"\nlast lines:\n{last}"
    return BuildResult(
        image_id=None, error=message, failed_step=progress.step, leftover_image=leftover
    )


def _step_failure(api: docker.APIClient, network: StepNetwork, error: str, memory_mb: int) -> str:
    """The failed step's container (the newest on the build's network, kept by forcerm=False)
    says whether memory ran out; the build's network goes with its containers after."""
    try:
        newest = step_containers(api, network)[:1]
        attrs: dict[str, Any] = api.inspect_container(newest[0]["Id"]) if newest else {}
    except (DockerException, OSError):
        return error  # the step succeeded and its container is gone: the error came later
    state = attrs.get("State") or {}
    if state.get("OOMKilled"):
        return (
            f"out of memory: the step used more than BUILD_MEMORY_MB ({memory_mb} MB) and was "
            f"killed (exit code {state.get('ExitCode')})"
        )
    return error


def _committed_under_failed_step(
    api: docker.APIClient, network: StepNetwork, started: float
) -> str | None:
    """The image the failed RUN step's container (kept by forcerm=False) was made from, if
    this build committed it: no name, created since the build started. Read from the engine,
    not from the build's output, which a step writes as it likes. A base image, or a step
    the builder took from its cache, is never this build's to remove."""
    try:
        newest = step_containers(api, network)[:1]
        if not newest:
            return None
        image_id = str(api.inspect_container(newest[0]["Id"]).get("Image") or "")
        attrs: dict[str, Any] = api.inspect_image(image_id) if image_id else {}
    except (DockerException, OSError):
        return None
    if not attrs or attrs.get("RepoTags") or attrs.get("RepoDigests"):
        return None
    created = engine_seconds(attrs.get("Created"))
    return image_id if created is not None and created >= started - 1.0 else None


# How long remove_failed_steps (in a thread of its own) waits for no build to run on the host
FAILED_STEPS_WAIT_SECONDS = 300.0
# How long the removal of an image no sweep will see again waits for builds on the host
LAST_CHANCE_WAIT_SECONDS = 30.0


def remove_build_tag(runtime: DockerRuntime, tag: str, *, last_chance: bool = False) -> bool:
    """Removes an old build's tag (the image with it, when no other name or container holds
    it); False when Docker refuses, or while a build runs on the host (image_turns): the
    sweep of old builds' images tries again. With `last_chance` (no sweep will see the tag
    again) it waits for its turn a while, then removes the tag all the same."""
    wait = LAST_CHANCE_WAIT_SECONDS if last_chance else 0.0
    with image_turns.removing(wait_seconds=wait) as our_turn:
        if not our_turn and not last_chance:
            return False
        try:
            runtime.client.api.remove_image(tag, force=False, noprune=False)
        except NotFound:
            return True
        except (APIError, DockerException):
            return False
    return True


def remove_failed_steps(runtime: DockerRuntime, step_image: str) -> bool:
    """Removes what a failed build committed before its failing step (_committed_under_
    failed_step): that image and, with it, the unnamed images under it down to the first
    one a tag names (the base). Nothing else would: no tag names them, and the image GC
    knows builds by their images.

    Never an image something else holds: one a tag names, or that a container or a later
    image stands on (another build's cache), is refused by the engine and stays. Waits for
    its turn (image_turns), for minutes if builds keep running: one running meanwhile could
    be using these very images as its cache. True once gone."""
    with image_turns.removing(wait_seconds=FAILED_STEPS_WAIT_SECONDS) as our_turn:
        if not our_turn:
            log.info("a failed build's step image %s stays: builds kept running", step_image)
            return False
        api = runtime.client.api
        try:
            attrs = api.inspect_image(step_image)
            if attrs.get("RepoTags") or attrs.get("RepoDigests"):
                return False  # named: not a step of ours
            api.remove_image(step_image, force=False, noprune=False)
        except NotFound:
            return True
        except (APIError, DockerException) as exc:
            log.info("a failed build's step image %s stays: %s", step_image, exc)
            return False
    return True


def prune_build_cache(runtime: DockerRuntime) -> None:
    """The engine's build cache. (The classic builder's steps are images: they go with the
    old build's image when its tag is removed.)"""
    try:
        runtime.client.api.prune_builds()
    except (APIError, DockerException):
        log.info("the engine's build cache could not be pruned", exc_info=True)
