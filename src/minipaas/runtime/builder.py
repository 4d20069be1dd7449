"""Image builds from a checked context, with Docker's classic builder.

The classic builder enforces `container_limits` on every RUN step (BuildKit ignores memory
limits: moby/buildkit#593). Closing the stream does not stop it, so a cancel or a deadline
kills the step's container.

Each build's steps run on a network of the build's own (`BuildSpec.network`, inter-container
traffic off): a step reaches neither other builds' steps nor containers on Docker's default
bridge, and the containers attached to that network are exactly the build's steps. That is
how they are found: never from the build's output, which the steps can print anything to
(a "Running in <id>" line only wakes the pids limiter up early).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
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
from minipaas.runtime.base import EngineUnavailable
from minipaas.runtime.docker_runtime import DockerRuntime

log = logging.getLogger(__name__)

_RUNNING_IN = re.compile(r"---> Running in [0-9a-f]{12,64}")
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
    network: str  # the build's own network's name: made before the build, removed after it
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

    def __init__(self, on_step_start: Callable[[], None] = lambda: None) -> None:
        self.on_step_start = on_step_start  # cheap: called on the reader's path
        self.step: str | None = None
        self.image_id: str | None = None
        self.tail: list[str] = []

    def saw(self, line: str) -> None:
        if _STEP.match(line):
            self.step = line
        if _RUNNING_IN.search(line):  # maybe the builder's, maybe a step's own: only a hint
            self.on_step_start()
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

    The builder prints "Running in <id>" just before it starts a step's container: such a
    line wakes this thread, which then limits every container on the build's network not
    limited yet. Without a line it looks every _WATCH_INTERVAL, so a step's own output can
    neither hide a step nor make more than one engine call per _LIMIT_INTERVAL. A step's
    container that cannot be limited is killed: the build fails rather than run unbounded."""

    def __init__(self, api: docker.APIClient, network_id: str | None, pids: int) -> None:
        super().__init__(name="build-pids", daemon=True)
        self.api = api
        self.network_id = network_id
        self.pids = pids
        self.failure: str | None = None
        self.done = threading.Event()
        self._wake = threading.Event()
        self._limited: set[str] = set()

    def wake(self) -> None:
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
            try:
                for container in step_containers(self.api, self.network_id):
                    if container["Id"] not in self._limited and container["State"] in _LIVE:
                        self._limit(container["Id"])
            except Exception:  # the engine's hiccup must not end the thread
                log.warning("build steps: pids limit not set", exc_info=True)
            time.sleep(_LIMIT_INTERVAL)

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
        network_id: str | None,
        lines: _Lines,
        stop_reason: Callable[[], str | None],
    ) -> None:
        super().__init__(name="build-watcher", daemon=True)
        self.api = api
        self.network_id = network_id
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
                    for container in step_containers(self.api, self.network_id):
                        if container["State"] in _LIVE:
                            with contextlib.suppress(APIError, DockerException):
                                self.api.kill(container["Id"])


# How the Linux bridges of build networks begin (no other interface's name does)
BUILD_BRIDGE_PREFIX = "mpbuild-"
# A step's container in these states may run (or is about to)
_LIVE = frozenset({"created", "running", "paused", "restarting"})


def step_containers(api: docker.APIClient, network_id: str | None) -> list[dict[str, Any]]:
    """The containers attached to a build's network, newest first: that build's steps, as
    nothing else is ever attached to it (a step cannot reach the engine to attach one)."""
    if network_id is None:
        return []
    found = api.containers(all=True, filters={"network": network_id})
    # The filter takes a name or an id prefix: only what is attached to this very network
    mine = [
        c
        for c in found
        if any(
            (n or {}).get("NetworkID") == network_id
            for n in ((c.get("NetworkSettings") or {}).get("Networks") or {}).values()
        )
    ]
    return sorted(mine, key=lambda c: int(c.get("Created") or 0), reverse=True)


def bridge_name(network: str) -> str:
    """The Linux bridge of a build's network: BUILD_BRIDGE_PREFIX and a digest of the
    network's name (15 characters at most), so the host's firewall can match every build's
    steps with one pattern (runtime/port_guard.py)."""
    digest = hashlib.sha256(network.encode()).hexdigest()
    return f"{BUILD_BRIDGE_PREFIX}{digest[: 15 - len(BUILD_BRIDGE_PREFIX)]}"


def open_build_network(runtime: DockerRuntime, name: str) -> str:
    """Makes the build's own network (a leftover of the same name, this install's, goes
    first); returns its id. Inter-container traffic is off: each step is alone on it."""
    close_build_network(runtime, name)
    stamped = labels.instance_labels(runtime.instance_name, runtime.install_id)
    created = runtime.client.api.create_network(
        name,
        driver="bridge",
        options={
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.name": bridge_name(name),
        },
        labels={**stamped, labels.BUILD: name},
        check_duplicate=True,
    )
    return str(created["Id"])


def close_build_network(runtime: DockerRuntime, name: str) -> bool:
    """Removes the build's steps (running or not) and its network, if this install made it;
    True when none is left. Used at the end of every build, and for a dead builder's."""
    api = runtime.client.api
    gone = True
    for network in api.networks(names=[name]):
        stamped = network.get("Labels") or {}
        if network.get("Name") != name or labels.BUILD not in stamped:
            continue  # the filter matches substrings; and never a network we did not make
        if labels.made_by_another_install(stamped, runtime.install_id):
            continue
        for container in step_containers(api, network["Id"]):
            with contextlib.suppress(NotFound):
                api.remove_container(container["Id"], force=True)
        try:
            api.remove_network(network["Id"])
        except NotFound:
            pass
        except (APIError, DockerException) as exc:
            log.warning("build network %s not removed yet: %s", name, exc)
            gone = False
    return gone


def build_networks(runtime: DockerRuntime) -> list[str]:
    """The names of this install's build networks that exist now."""
    wanted = [f"{k}={v}" for k, v in labels.instance_labels(runtime.instance_name).items()]
    found = runtime.client.api.networks(filters={"label": [*wanted, labels.BUILD]})
    return [
        str(n["Name"])
        for n in found
        if not labels.made_by_another_install(n.get("Labels") or {}, runtime.install_id)
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


@contextmanager
def build_network(
    runtime: DockerRuntime, name: str, *, needed: bool = True
) -> Iterator[str | None]:
    """The build's own network for its RUN steps (its id), made before the build when it has
    steps to run and removed, with what is left on it, when the caller is done: after the
    build's outcome is recorded, as removing it takes ~0.2 s. Without one (`needed` False) a
    step fails at once: the engine cannot attach it to a network that does not exist, and
    never falls back to its default bridge."""
    network_id = open_build_network(runtime, name) if needed else None
    try:
        yield network_id
    finally:
        if network_id is not None:
            try:
                close_build_network(runtime, name)
            except (DockerException, OSError):  # remove_leftover_build_networks tries again
                log.warning("build network %s not removed", name, exc_info=True)


def has_build_triggers(runtime: DockerRuntime, reference: str) -> bool:
    """The image has ONBUILD triggers (a build FROM it runs them, RUN steps maybe); also
    True when it cannot be looked at, to be on the safe side."""
    try:
        attrs: dict[str, Any] = runtime.client.api.inspect_image(reference)
    except (DockerException, OSError):
        return True
    return bool((attrs.get("Config") or {}).get("OnBuild"))


def build_image(
    runtime: DockerRuntime,
    spec: BuildSpec,
    *,
    network_id: str | None,
    on_lines: Callable[[list[str]], None],
    stop_reason: Callable[[], str | None],
) -> BuildResult:
    """Runs the build, handing its output on line by line; never raises for a failed step.
    `network_id`: spec.network's, from build_network (None: it has no steps to run)."""
    try:
        # A client of its own: a step may print nothing for minutes, past the usual timeout.
        # The runtime's API version: not asked of the engine again for every build (10-40 ms)
        api = docker.from_env(
            version=runtime.client.api.api_version, timeout=spec.timeout_seconds + 60
        ).api
    except DockerException as exc:
        raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc
    try:
        return _run(runtime, api, spec, network_id, on_lines, stop_reason)
    finally:
        api.close()


def _run(
    runtime: DockerRuntime,
    api: docker.APIClient,
    spec: BuildSpec,
    network_id: str | None,
    on_lines: Callable[[list[str]], None],
    stop_reason: Callable[[], str | None],
) -> BuildResult:
    limiter = _PidsLimiter(api, network_id, spec.pids)
    progress = _Progress(limiter.wake)
    lines = _Lines(on_lines, progress)
    if network_id is not None:  # else no step can run
        limiter.start()
    watcher = _Watcher(api, network_id, lines, stop_reason)
    watcher.start()
    error: str | None = None
    try:
        # Image removals by any install on the host wait until this build ends (image_turns)
        with image_turns.building(), spec.context.open("rb") as context:
            for chunk in _stream(api, spec, context):
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
    return _result(runtime, api, spec, network_id, progress, error, watcher.reason)


def _stream(api: docker.APIClient, spec: BuildSpec, context: Any) -> Iterator[dict[str, Any]]:
    yield from api.build(
        fileobj=context,
        custom_context=True,
        tag=spec.tag,
        dockerfile=spec.dockerfile,
        buildargs=spec.build_args or None,
        container_limits=container_limits(spec.memory_mb, spec.cpus),
        # RUN steps on the build's own network, not Docker's default bridge
        network_mode=spec.network,
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
    network_id: str | None,
    progress: _Progress,
    error: str | None,
    stopped: str | None,
) -> BuildResult:
    if error is None and stopped is None:
        image_id = runtime.image_id(spec.tag)
        if image_id is not None:
            return BuildResult(image_id=image_id)
        error = "the build ended without an image"
    why = _step_failure(api, network_id, error or "stopped", spec.memory_mb)
    if stopped is not None:
        return BuildResult(image_id=None, error=stopped, failed_step=progress.step, stopped=stopped)
    last = "\n".join(line for line in progress.tail[-10:] if line.strip())
    message = f"{progress.step or 'the build'} failed: {why}"
    if progress.step is not None and " : FROM " in progress.step:
        message += (
            "\nbase images are never pulled: the image named in FROM must be on this host "
            "(build or load it there first, or use one that is)"
        )
    if last:
        message += f"\nlast lines:\n{last}"
    return BuildResult(image_id=None, error=message, failed_step=progress.step)


def _step_failure(api: docker.APIClient, network_id: str | None, error: str, memory_mb: int) -> str:
    """The failed step's container (the newest on the build's network, kept by forcerm=False)
    says whether memory ran out; the build's network goes with its containers after."""
    try:
        newest = step_containers(api, network_id)[:1]
        attrs: dict[str, Any] = api.inspect_container(newest[0]["Id"]) if newest else {}
    except (APIError, DockerException):
        return error  # the step succeeded and its container is gone: the error came later
    state = attrs.get("State") or {}
    if state.get("OOMKilled"):
        return (
            f"out of memory: the step used more than BUILD_MEMORY_MB ({memory_mb} MB) and was "
            f"killed (exit code {state.get('ExitCode')})"
        )
    return error


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


def prune_build_cache(runtime: DockerRuntime) -> None:
    """The engine's build cache. (The classic builder's steps are images: they go with the
    old build's image when its tag is removed.)"""
    try:
        runtime.client.api.prune_builds()
    except (APIError, DockerException):
        log.info("the engine's build cache could not be pruned", exc_info=True)
