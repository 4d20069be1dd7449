"""How the Swarm engine reads a service's tasks: which one counts, and whether it runs."""

from __future__ import annotations

from minipaas.runtime.inventory import node_address
from minipaas.runtime.swarm_runtime import _current, _epoch, _runs, _sortable


def task(state: str, desired: str = "running", created: str = "2026-11-27T20:00:00Z") -> dict:
    return {"Status": {"State": state}, "DesiredState": desired, "CreatedAt": created}


def test_a_task_runs_only_while_it_is_meant_to() -> None:
    assert _runs(task("running"))
    # a node that went down: the last state reported stays, Swarm wants it shut down
    assert not _runs(task("running", desired="shutdown"))
    assert not _runs(task("starting"))
    assert not _runs(task("failed", desired="shutdown"))


def test_the_task_meant_to_run_counts_before_a_newer_one_shutting_down() -> None:
    meant = task("starting", created="2026-11-27T20:00:01Z")
    leaving = task("running", desired="shutdown", created="2026-11-27T20:00:02Z")
    assert _current([leaving, meant]) is meant
    assert _current([leaving]) is leaving
    assert _current([]) is None


def test_creation_times_sort_whatever_zeros_docker_trimmed() -> None:
    # Docker writes .1Z for .100000000Z: as plain strings ".1Z" sorts after ".12Z"
    stamps = ["2026-11-27T20:00:00.12Z", "2026-11-27T20:00:00.1Z", "2026-11-27T20:00:00Z"]
    ordered = sorted(stamps, key=_sortable)
    assert ordered == ["2026-11-27T20:00:00Z", "2026-11-27T20:00:00.1Z", "2026-11-27T20:00:00.12Z"]
    assert _epoch("2026-11-27T20:52:35.123456789Z") == "1795812755"
    assert _epoch(None) == ""


def test_a_node_address_is_never_the_any_address() -> None:
    assert node_address({"Status": {"Addr": "10.0.0.5"}}) == "10.0.0.5"
    manager = {"Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "10.0.0.1:2377"}}
    assert node_address(manager) == "10.0.0.1"
    assert node_address({"Status": {"Addr": "0.0.0.0"}}) == ""
    assert node_address({}) == ""
