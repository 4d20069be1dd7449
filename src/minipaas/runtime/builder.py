"""Image builds from a checked context, with Docker's classic builder.

The classic builder enforces `container_limits` on every RUN step (BuildKit ignores memory
limits: moby/buildkit#593). Closing the stream does not stop it, so a cancel or a deadline
kills the step's container, known from the build's own output ("Running in <id>"). That
output holds what the steps print too, so the id is only trusted for a container that could
be a step of this build (`step_container`): never an app's, nor one older than the build.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from minipaas.runtime import image_turns
from minipaas.runtime.base import EngineUnavailable
from minipaas.runtime.docker_runtime import DockerRuntime

log = logging.getLogger(__name__)

_RUNNING_IN = re.compile(r"---> Running in ([0-9a-f]{12,64})")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_BUILT = re.compile(r"^Successfully built ([0-9a-f]{12,64})")
# An app container's name (docker_runtime.container_name, any install's; on Swarm its task's
# container adds .<slot>.<task id>); a build step's is one Docker makes up (adjective_name)
_APP_CONTAINER = re.compile(r"/?.+-app[0-9]+-d[0-9]+(?:-r[0-9]+)?(?:\.[0-9]+\.[0-9a-z]+)?")
# Docker's clock and ours are the host's; a step's container is made after the build began
_CREATED_SLACK = timedelta(milliseconds=100)
# Containers named in the output that are kept: a step printing ids without end cannot grow
# the list (it can push the real one out, and then only its own build goes unwatched)
_CONTAINERS_KEPT = 64
# How often the watcher asks whether to stop (a cancel ends the step within this, plus a kill)
_WATCH_INTERVAL = 0.5
# The pids limiter's pause between two looks at containers the output named
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
    """What the output said so far: the step, its container, the last lines."""

    def __init__(self, on_container: Callable[[str], None] = lambda _: None) -> None:
        self.on_container = on_container  # cheap: called on the reader's path
        self.step: str | None = None
        # Every container a line named, newest last: the builder's own line for the step
        # that runs, and any a step printed (step_container tells them apart)
        self.containers: list[str] = []
        self.image_id: str | None = None
        self.tail: list[str] = []
        self.lock = threading.Lock()

    def saw(self, line: str) -> None:
        if match := _STEP.match(line):
            self.step = line
        if match := _RUNNING_IN.search(line):
            with self.lock:
                named = match.group(1)
                if named in self.containers:
                    self.containers.remove(named)
                self.containers = [*self.containers[-(_CONTAINERS_KEPT - 1) :], named]
            self.on_container(named)
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
    """Sets the pids limit on each step's container as the output names it (the classic
    builder takes no such limit): a fork bomb in a RUN step would otherwise have only the
    memory limit between it and the host's process ids (kernel.pid_max is 32,768 on many
    hosts). The builder names the container just before it starts it.

    Off the reader's path, and one look at a time: the newest id named waits in one slot,
    so a step printing ids without end costs the engine one inspect per _LIMIT_INTERVAL, not
    one per line. A step's container that cannot be limited is killed: the build fails
    rather than run unbounded."""

    def __init__(self, api: docker.APIClient, since: datetime, pids: int) -> None:
        super().__init__(name="build-pids", daemon=True)
        self.api = api
        self.since = since
        self.pids = pids
        self.failure: str | None = None
        self.done = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._newest: str | None = None

    def named(self, container: str) -> None:
        with self._lock:
            self._newest = container
        self._wake.set()

    def stop(self) -> None:
        self.done.set()
        self._wake.set()  # not a wait of up to _WATCH_INTERVAL at the end of every build

    def run(self) -> None:
        looked_at: str | None = None
        while not self.done.is_set():
            self._wake.wait(_WATCH_INTERVAL)
            self._wake.clear()
            with self._lock:
                container = self._newest
            if container is None or container == looked_at:
                continue
            looked_at = container
            try:
                self._limit(container)
            except Exception:  # the engine's hiccup must not end the thread
                log.warning("build step %s: pids limit not set", container, exc_info=True)
            time.sleep(_LIMIT_INTERVAL)

    def _limit(self, container: str) -> None:
        attrs = step_container(self.api, container, self.since)
        if attrs is None:
            return
        try:
            # docker-py's update_container has no pids parameter; the engine's API does (1.40+)
            url = self.api._url("/containers/{0}/update", attrs["Id"])
            self.api._raise_for_status(self.api._post_json(url, data={"PidsLimit": self.pids}))
        except Exception as exc:
            if not self._still_running(attrs["Id"]):
                return  # a quick step ended (and went) meanwhile: nothing runs unbounded
            self.failure = f"the step's processes could not be limited (BUILD_PIDS): {exc}"
            with contextlib.suppress(Exception):
                self.api.kill(attrs["Id"])

    def _still_running(self, container: str) -> bool:
        try:
            return bool(self.api.inspect_container(container)["State"]["Running"])
        except NotFound:
            return False
        except Exception:
            return True  # unknown: treated as running, so it is killed


class _Watcher(threading.Thread):
    """Kills the running step's container once `stop_reason` gives a reason."""

    def __init__(
        self,
        api: docker.APIClient,
        lines: _Lines,
        stop_reason: Callable[[], str | None],
        since: datetime,
    ) -> None:
        super().__init__(name="build-watcher", daemon=True)
        self.api = api
        self.since = since
        self.lines = lines
        self.progress = lines.progress
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
                self._kill_step()

    def _kill_step(self) -> None:
        with self.progress.lock:
            named = list(self.progress.containers)
        attrs = newest_step_container(self.api, named, self.since)
        if attrs is None:
            return
        # Not running (between steps): the next step's container gets killed
        with contextlib.suppress(APIError, DockerException):
            self.api.kill(attrs["Id"])


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


def build_image(
    runtime: DockerRuntime,
    spec: BuildSpec,
    *,
    on_lines: Callable[[list[str]], None],
    stop_reason: Callable[[], str | None],
) -> BuildResult:
    """Runs the build, handing its output on line by line; never raises for a failed step."""
    began = datetime.now(UTC)
    try:
        # A client of its own: a step may print nothing for minutes, past the usual timeout.
        # The runtime's API version: not asked of the engine again for every build (10-40 ms)
        api = docker.from_env(
            version=runtime.client.api.api_version, timeout=spec.timeout_seconds + 60
        ).api
    except DockerException as exc:
        raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc
    limiter = _PidsLimiter(api, began, spec.pids)
    progress = _Progress(limiter.named)
    lines = _Lines(on_lines, progress)
    limiter.start()
    watcher = _Watcher(api, lines, stop_reason, began)
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
        limiter.join(timeout=5)
        lines.flush(final=True)
    if limiter.failure is not None:
        error = limiter.failure
    try:
        return _result(runtime, api, spec, progress, error, watcher.reason, began)
    finally:
        api.close()


def _stream(api: docker.APIClient, spec: BuildSpec, context: Any) -> Iterator[dict[str, Any]]:
    yield from api.build(
        fileobj=context,
        custom_context=True,
        tag=spec.tag,
        dockerfile=spec.dockerfile,
        buildargs=spec.build_args or None,
        container_limits=container_limits(spec.memory_mb, spec.cpus),
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
    progress: _Progress,
    error: str | None,
    stopped: str | None,
    began: datetime,
) -> BuildResult:
    if error is None and stopped is None:
        image_id = runtime.image_id(spec.tag)
        if image_id is not None:
            return BuildResult(image_id=image_id)
        error = "the build ended without an image"
    why = error or "stopped"
    if progress.containers:
        why = _step_failure(api, progress.containers, why, spec.memory_mb, began)
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


def _step_failure(
    api: docker.APIClient, named: list[str], error: str, memory_mb: int, began: datetime
) -> str:
    """The failed step's container says whether memory ran out; it is removed after."""
    attrs = newest_step_container(api, named, began)
    if attrs is None:
        return error  # the step succeeded and its container is gone: the error came later
    try:
        api.remove_container(attrs["Id"], force=True)
    except (APIError, DockerException):
        log.warning("could not remove the failed build step's container %s", attrs["Id"])
    state = attrs.get("State") or {}
    if state.get("OOMKilled"):
        return (
            f"out of memory: the step used more than BUILD_MEMORY_MB ({memory_mb} MB) and was "
            f"killed (exit code {state.get('ExitCode')})"
        )
    return error


def newest_step_container(
    api: docker.APIClient, named: list[str], since: datetime
) -> dict[str, Any] | None:
    """Of the containers the output named, the newest that can be a step of this build."""
    for container in reversed(named):
        attrs = step_container(api, container, since)
        if attrs is not None:
            return attrs
    return None


def step_container(api: docker.APIClient, container: str, since: datetime) -> dict[str, Any] | None:
    """The container's attributes if it can be a step of a build that began at `since`:
    created since then, and not named as an app's container. A "Running in <id>" line may
    come from a step's own output, naming any container it likes; it is then left alone.
    None as well when it is gone."""
    try:
        attrs: dict[str, Any] = api.inspect_container(container)
    except (APIError, DockerException):  # NotFound included
        return None
    created = _docker_time(str(attrs.get("Created") or ""))
    if created is None or created < since - _CREATED_SLACK:
        return None
    if _APP_CONTAINER.fullmatch(str(attrs.get("Name") or "")):
        return None
    return attrs


def _docker_time(value: str) -> datetime | None:
    """Docker's RFC 3339 time with nanoseconds, to the microsecond."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", value)
    if match is None:
        return None
    fraction = (match.group(2) or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{match.group(1)}.{fraction}+00:00")


def step_container_in(line: str) -> str | None:
    """The container a build step runs in, when the line announces one."""
    match = _RUNNING_IN.search(line)
    return match.group(1) if match else None


def kill_step_container(runtime: DockerRuntime, container: str, since: datetime) -> None:
    """Ends the step's container of a build that began at `since` (its builder died): the
    build fails instead of running on unwatched."""
    attrs = step_container(runtime.client.api, container, since)
    if attrs is None:
        return
    with contextlib.suppress(NotFound, APIError, DockerException):
        runtime.client.api.remove_container(attrs["Id"], force=True)


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
