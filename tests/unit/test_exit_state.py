"""exit_state(): a container killed by SIGKILL (137) with a memory limit is read again until
Docker marks the OOM kill it may record after the exit (a race seen under CI's load: the
deploy said "exited with code 137" for an app over its memory limit). The engine's race is
played by a runtime whose state() answers from a script; the waiting is the code under test."""

from __future__ import annotations

import time
from pathlib import Path

from minipaas.config import Settings
from minipaas.runtime.base import ContainerState
from minipaas.runtime.docker_runtime import OOM_SETTLE_SECONDS, DockerRuntime


def _stopped(code: int, *, oom: bool, limit_mb: int | None = 16) -> ContainerState:
    return ContainerState("exited", False, code, oom, 0, limit_mb)


class _ScriptedRuntime(DockerRuntime):
    """state() answers the next scripted state (the last one from then on)."""

    def __init__(self, tmp_path: Path, states: list[ContainerState]) -> None:
        super().__init__(Settings(data_dir=tmp_path, instance_name="mptexit"))
        self.states = states
        self.reads = 0

    def state(self, container_ref: str) -> ContainerState | None:
        self.reads += 1
        return self.states[min(self.reads, len(self.states)) - 1]


def test_an_oom_docker_marks_after_the_exit_is_seen(tmp_path: Path) -> None:
    early, late = _stopped(137, oom=False), _stopped(137, oom=True)
    runtime = _ScriptedRuntime(tmp_path, [early, early, early, late])
    assert runtime.exit_state("c1") == late


def test_a_plain_kill_is_reported_as_such_after_the_bounded_wait(tmp_path: Path) -> None:
    killed = _stopped(137, oom=False)
    runtime = _ScriptedRuntime(tmp_path, [killed])
    started = time.monotonic()
    assert runtime.exit_state("c1") == killed
    assert OOM_SETTLE_SECONDS <= time.monotonic() - started < OOM_SETTLE_SECONDS + 0.5


def test_other_exits_are_not_waited_for(tmp_path: Path) -> None:
    for state in (
        _stopped(1, oom=False),
        _stopped(137, oom=False, limit_mb=None),
        _stopped(137, oom=True),
        ContainerState("running", True, 0, False, 0, 16),
    ):
        runtime = _ScriptedRuntime(tmp_path, [state])
        assert runtime.exit_state("c1") == state
        assert runtime.reads == 1


def test_the_reason_says_oom_when_docker_saw_it_and_most_likely_oom_when_it_did_not() -> None:
    assert _stopped(137, oom=True).stop_reason().endswith("limit of 16 MB (OOM)")
    unmarked = _stopped(137, oom=False).stop_reason(while_starting=True)
    assert "most likely by the kernel's OOM killer" in unmarked and "16 MB" in unmarked
    # A kill without a memory limit, or another exit, is not called an OOM
    assert _stopped(137, oom=False, limit_mb=None).stop_reason(while_starting=True) == "exited"
    assert _stopped(1, oom=False).stop_reason(while_starting=True) == "exited"


def test_a_sigkill_after_the_start_is_not_guessed_to_be_an_oom() -> None:
    """The prober's kill of a hung replica, or an operator's `docker kill`, is an exit."""
    assert _stopped(137, oom=False).stop_reason() == "exited"
