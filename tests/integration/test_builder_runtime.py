"""The builder against the real engine, without the platform: a deadline kills the running
step within a second, lines arrive while a step is silent, limits hold, and steps run on a
network of their own that goes with the build."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import docker
import httpx
import pytest

from minipaas.config import Settings
from minipaas.runtime.builder import (
    BuildResult,
    BuildSpec,
    build_image,
    build_network,
    build_networks,
)
from minipaas.runtime.docker_runtime import DockerRuntime
from tests.support.builds import scratch_context, tar_bytes
from tests.support.engine import containers_whose_command_holds
from tests.support.images import HELLO_V1
from tests.support.waiting import eventually

pytestmark = [pytest.mark.docker]


def _spec(tmp_path: Path, run: str, tag: str, pids: int = 1024) -> BuildSpec:
    context = tmp_path / "context.tar"
    context.write_bytes(tar_bytes(scratch_context("x", run=run)))
    return BuildSpec(
        context=context,
        tag=tag,
        dockerfile="Dockerfile",
        build_args={},
        memory_mb=64,
        cpus=0.5,
        timeout_seconds=60,
        pids=pids,
    )


def _build(
    runtime: DockerRuntime,
    spec: BuildSpec,
    *,
    on_lines: Callable[[list[str]], None] = lambda _: None,
    stop_reason: Callable[[], str | None] = lambda: None,
    needed: bool = True,
    key: str | None = None,
) -> BuildResult:
    """As the pipeline does: the build's network around the build."""
    key = key or f"minipaas-test-build-{secrets.token_hex(4)}"
    with build_network(runtime, key, needed=needed) as network:
        return build_image(
            runtime, spec, network=network, on_lines=on_lines, stop_reason=stop_reason
        )


def _network_left(runtime: DockerRuntime, key: str) -> bool:
    return bool(build_networks(runtime, key))


@pytest.mark.alone  # the kill timed to 2 s
def test_a_deadline_kills_the_silent_step_and_says_why(tmp_path: Path) -> None:
    marker = secrets.token_hex(6)
    spec = _spec(tmp_path, f"echo started {marker}; sleep 300", f"minipaas-test/deadline:{marker}")
    lines: list[tuple[float, str]] = []
    asked: list[float] = []
    began = time.monotonic()

    def stop_reason() -> str | None:
        # The deadline passes 1.5 s after the step printed its line, while it sleeps on
        seen = [at for at, line in lines if f"started {marker}" in line]
        if not seen or time.monotonic() - seen[0] < 1.5:
            return None
        asked.append(time.monotonic())
        return "took longer than BUILD_TIMEOUT_SECONDS"

    result = _build(
        DockerRuntime(Settings(data_dir=tmp_path)),
        spec,
        on_lines=lambda batch: lines.extend((time.monotonic(), line) for line in batch),
        stop_reason=stop_reason,
    )
    ended = time.monotonic()
    assert result.image_id is None and result.stopped == "took longer than BUILD_TIMEOUT_SECONDS"
    assert result.failed_step is not None and " : RUN " in result.failed_step
    # The line came while the step was silent, not at its end; the kill took under 2 s
    assert asked, "the step's line never arrived while it ran"
    print(f"\nstopped {ended - asked[0]:.2f} s after the deadline ({ended - began:.1f} s in all)")
    assert ended - asked[0] < 2
    assert containers_whose_command_holds(marker) == []


def test_free_disk_is_checked_where_uploads_and_images_live(tmp_path: Path) -> None:
    from minipaas.runtime.builder import free_disk_mb
    from minipaas.services.builds.records import check_free_disk
    from minipaas.services.errors import InsufficientStorage

    found = free_disk_mb(DockerRuntime(Settings(data_dir=tmp_path)), tmp_path)
    assert "DATA_DIR" in found and any(where.startswith("Docker's root") for where in found)
    assert all(mb > 0 for mb in found.values())
    check_free_disk(Settings(data_dir=tmp_path, build_min_free_disk_mb=1))
    with pytest.raises(InsufficientStorage, match="BUILD_MIN_FREE_DISK_MB"):
        check_free_disk(Settings(data_dir=tmp_path, build_min_free_disk_mb=10**9))


def test_containers_a_step_names_in_its_output_are_left_alone(tmp_path: Path) -> None:
    """A step can print "Running in <id>" lines as the builder does, naming any container,
    as many as it likes: those are never killed or removed, and the real step is stopped all
    the same (it is known by the build's network, not by the output)."""
    runtime = DockerRuntime(Settings(data_dir=tmp_path))
    marker = secrets.token_hex(6)
    image = f"minipaas-test/bystander:{marker}"
    assert _build(runtime, _spec(tmp_path, "true", image)).image_id
    sleep = ["/bin/busybox", "sleep", "3600"]
    bystanders = [
        runtime.client.containers.create(image, command=sleep, name=f"bystander-{marker}"),
        runtime.client.containers.run(image, command=sleep, detach=True),
    ]
    lines: list[str] = []
    try:
        # A hundred claims per bystander, then the step sleeps on
        claims = "; ".join(f'echo " ---> Running in {c.id}"' for c in bystanders)
        run = f"for i in $(seq 100); do {claims}; done; echo started {marker}; sleep 300"
        spec = _spec(tmp_path, run, f"minipaas-test/spoof:{marker}")
        key = f"minipaas-test-build-{marker}"
        result = _build(
            runtime,
            spec,
            on_lines=lines.extend,
            stop_reason=lambda: "cancelled" if f"started {marker}" in lines else None,
            key=key,
        )
        assert result.stopped == "cancelled", result
        for container in bystanders:
            container.reload()  # still there (NotFound otherwise), as they were
        assert [c.status for c in bystanders] == ["created", "running"]
        # The real step was stopped and removed, and the build's network went with it
        assert containers_whose_command_holds(f"started {marker}") == []
        assert not _network_left(runtime, key)
    finally:
        for container in bystanders:
            container.remove(force=True)
        runtime.client.images.remove(image, force=True)


def _answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/", timeout=1).status_code > 0
    except httpx.HTTPError:
        return False


def test_a_step_reaches_no_container_on_the_default_bridge(tmp_path: Path) -> None:
    """Steps run on the build's own network: a container on Docker's default bridge (where
    the classic builder puts steps by default, and where they reached it) answers nothing."""
    runtime = DockerRuntime(Settings(data_dir=tmp_path))
    bystander = runtime.client.containers.run(HELLO_V1, detach=True)
    try:
        bystander.reload()
        address = bystander.attrs["NetworkSettings"]["IPAddress"]
        # From the host it answers: the step's silence is the network's doing
        eventually(lambda: _answers(address), timeout=10, message="the bystander is silent")
        marker = secrets.token_hex(6)
        ask = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 {address} 80 | grep -q HTTP'
        run = f"if {ask}; then echo reached {marker}; else echo refused {marker}; fi"
        lines: list[str] = []
        spec = _spec(tmp_path, run, f"minipaas-test/isolated:{marker}")
        key = f"minipaas-test-build-{marker}"
        result = _build(runtime, spec, on_lines=lines.extend, key=key)
        assert result.image_id is not None, result.error
        runtime.client.images.remove(spec.tag, force=True)
        # The step's own lines (the builder's colour codes may lead them), not its command's
        output = [line for line in lines if not line.startswith("Step ")]
        said = [w for w in ("reached", "refused") if any(f"{w} {marker}" in x for x in output)]
        assert said == ["refused"], lines
        assert not _network_left(runtime, key)
    finally:
        bystander.remove(force=True)


def test_a_build_step_runs_under_the_pids_limit(tmp_path: Path) -> None:
    """The classic builder takes no pids limit: the platform sets one on each step's
    container as the output names it (the engine applies it once it has started the
    container: it holds the container meanwhile). The step reads its own cgroup's limit (v1
    or v2) a moment later."""
    marker = secrets.token_hex(6)
    limit = 77
    run = (
        "sleep 1; echo limit $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null "
        f"|| cat /sys/fs/cgroup/pids.max) {marker}"
    )
    lines: list[str] = []
    result = _build(
        DockerRuntime(Settings(data_dir=tmp_path)),
        _spec(tmp_path, run, f"minipaas-test/pids:{marker}", pids=limit),
        on_lines=lines.extend,
    )
    assert result.image_id is not None, result.error
    try:
        said = [line for line in lines if line.startswith("limit ") and marker in line]
        assert said == [f"limit {limit} {marker}"], lines
    finally:
        docker.from_env().images.remove(f"minipaas-test/pids:{marker}", force=True)


def test_without_its_network_a_step_fails_and_never_runs_on_the_default_bridge(
    tmp_path: Path,
) -> None:
    """A build thought to have no steps gets no network; if a step comes all the same (an
    ONBUILD RUN the pipeline missed, say), the engine cannot attach it and the build fails."""
    runtime = DockerRuntime(Settings(data_dir=tmp_path))
    marker = secrets.token_hex(6)
    lines: list[str] = []
    spec = _spec(tmp_path, f"echo ran {marker}", f"minipaas-test/no-network:{marker}")
    key = f"minipaas-test-build-{marker}"
    result = _build(runtime, spec, on_lines=lines.extend, needed=False, key=key)
    assert result.image_id is None and result.error is not None
    assert f"network {key}-" in result.error and "not found" in result.error, result.error
    assert not any(f"ran {marker}" in line and not line.startswith("Step ") for line in lines)
    assert not _network_left(runtime, key)


def test_a_step_filling_the_disk_is_stopped_at_the_free_disk_minimum(tmp_path: Path) -> None:
    """The classic builder bounds no step's disk: the pipeline's check of free disk, twice a
    second during the build, stops a step that writes without end. Here the minimum is set
    300 MB under what is free now, and the step writes up to 1.5 GB."""
    from minipaas.runtime.builder import free_disk_mb
    from minipaas.services.builds.pipeline import short_of_disk

    runtime = DockerRuntime(Settings(data_dir=tmp_path))
    free = min(free_disk_mb(runtime, tmp_path).values())
    assert free > 3000, f"only {free} MB free here: this test writes up to 1.5 GB"
    settings = Settings(data_dir=tmp_path, build_min_free_disk_mb=free - 300)
    marker = secrets.token_hex(6)
    run = f"dd if=/dev/zero of=/fill bs=1M count=1500 2>/dev/null; echo wrote {marker}"
    spec = _spec(tmp_path, run, f"minipaas-test/disk:{marker}")
    began = time.monotonic()
    result = _build(runtime, spec, stop_reason=lambda: short_of_disk(settings, runtime))
    print(f"\nstopped after {time.monotonic() - began:.1f} s")
    assert result.image_id is None and result.stopped is not None, result
    assert "BUILD_MIN_FREE_DISK_MB" in result.stopped
    # The step's layer went with its container: the disk is free again
    assert min(free_disk_mb(runtime, tmp_path).values()) > free - 300
