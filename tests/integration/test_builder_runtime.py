"""The builder against the real engine, without the platform: a deadline kills the running
step within a second, lines arrive while a step is silent, memory limits hold."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest

from minipaas.config import Settings
from minipaas.runtime.builder import BuildSpec, build_image, step_container
from minipaas.runtime.docker_runtime import DockerRuntime
from tests.support.builds import scratch_context, tar_bytes
from tests.support.engine import containers_whose_command_holds

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

    result = build_image(
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


def test_a_container_a_step_names_in_its_output_is_left_alone(tmp_path: Path) -> None:
    """The step's id is read from the build's output, which the step can print to as well:
    a container older than the build, or named as an app's, is never killed or removed."""
    runtime = DockerRuntime(Settings(data_dir=tmp_path))
    api = runtime.client.api
    marker = secrets.token_hex(6)
    image = f"minipaas-test/bystander:{marker}"
    assert build_image(
        runtime, _spec(tmp_path, "true", image), on_lines=lambda _: None, stop_reason=lambda: None
    ).image_id
    sleep = ["/bin/busybox", "sleep", "3600"]
    older = runtime.client.containers.create(image, command=sleep, name=f"bystander-{marker}")
    time.sleep(0.5)
    since = datetime.now(UTC)
    app_like = runtime.client.containers.create(image, command=sleep, name=f"mp-app1-d{since:%S%f}")
    unnamed = runtime.client.containers.create(image, command=sleep)
    lines: list[str] = []
    try:
        # Only a container made since the build began, with a name Docker made up, may be a step
        assert step_container(api, older.id, since) is None
        assert step_container(api, app_like.id, since) is None
        assert step_container(api, unnamed.id, since) is not None
        # A step claims to run in the older container; then it sleeps on
        run = f'echo " ---> Running in {older.id}"; echo started {marker}; sleep 300'
        result = build_image(
            runtime,
            _spec(tmp_path, run, f"minipaas-test/spoof:{marker}"),
            on_lines=lines.extend,
            stop_reason=lambda: "cancelled" if any(marker in line for line in lines) else None,
        )
        assert result.stopped == "cancelled", result
        older.reload()  # still there (NotFound otherwise), and never started or killed
        assert older.status == "created"
        # The real step was stopped and removed all the same
        assert containers_whose_command_holds(f"started {marker}") == []
    finally:
        for container in (older, app_like, unnamed):
            container.remove(force=True)
        runtime.client.images.remove(image, force=True)


def test_a_build_step_runs_under_the_pids_limit(tmp_path: Path) -> None:
    """The classic builder takes no pids limit: the platform sets one on each step's
    container as the output names it. The step reads its own cgroup's limit (v1 or v2)."""
    marker = secrets.token_hex(6)
    limit = 77
    run = (
        "sleep 1; echo limit $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null "
        f"|| cat /sys/fs/cgroup/pids.max) {marker}"
    )
    lines: list[str] = []
    result = build_image(
        DockerRuntime(Settings(data_dir=tmp_path)),
        _spec(tmp_path, run, f"minipaas-test/pids:{marker}", pids=limit),
        on_lines=lines.extend,
        stop_reason=lambda: None,
    )
    assert result.image_id is not None, result.error
    try:
        said = [line for line in lines if line.startswith("limit ") and marker in line]
        assert said == [f"limit {limit} {marker}"], lines
    finally:
        docker.from_env().images.remove(f"minipaas-test/pids:{marker}", force=True)
