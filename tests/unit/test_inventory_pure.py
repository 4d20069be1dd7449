"""The parts of runtime/inventory.py that read the engine's answers, on answers the one-node
swarm here never gives (a manager reported at 0.0.0.0, a service with replaced tasks)."""

from __future__ import annotations

from minipaas.runtime import inventory


def _node(addr: str, manager_addr: str | None) -> dict[str, object]:
    node: dict[str, object] = {
        "ID": "n1",
        "Spec": {"Role": "manager", "Availability": "drain"},
        "Status": {"State": "ready", "Addr": addr},
        "Description": {"Hostname": "node-1", "Engine": {"EngineVersion": "20.10.24"}},
    }
    if manager_addr is not None:
        node["ManagerStatus"] = {"Leader": True, "Addr": manager_addr}
    return node


def test_a_manager_reported_at_0_0_0_0_is_at_its_advertised_address() -> None:
    found = inventory._swarm_node(_node("0.0.0.0", "10.0.0.5:2377"))
    assert found == inventory.Node(
        id="n1",
        hostname="node-1",
        address="10.0.0.5",
        role="manager",
        availability="drain",
        state="ready",
        leader=True,
        engine_version="20.10.24",
    )
    assert inventory._swarm_node(_node("10.0.0.7", "10.0.0.5:2377")).address == "10.0.0.7"
    worker = inventory._swarm_node(_node("10.0.0.9", None))
    assert (worker.address, worker.leader) == ("10.0.0.9", False)


def test_the_task_meant_to_run_counts_over_newer_ended_ones() -> None:
    ended = {"ID": "old", "DesiredState": "shutdown", "Version": {"Index": 40}}
    running = {"ID": "new", "DesiredState": "running", "Version": {"Index": 30}}
    assert inventory._current_task([ended, running]) == running
    stopped_later = {"ID": "later", "DesiredState": "shutdown", "Version": {"Index": 50}}
    assert inventory._current_task([ended, stopped_later]) == stopped_later
    assert inventory._current_task([]) is None


def test_only_a_host_mode_port_is_a_nodes_port() -> None:
    ingress = {"PublishMode": "ingress", "PublishedPort": 30001, "TargetPort": 80}
    ipv4 = {"PublishMode": "host", "PublishedPort": 32790, "TargetPort": 80}
    ipv6 = {"PublishMode": "host", "PublishedPort": 32788, "TargetPort": 80}
    assert inventory._task_host_port({"PortStatus": {"Ports": [ingress, ipv4, ipv6]}}) == 32790
    assert inventory._task_host_port({"PortStatus": {}}) is None
    assert inventory._task_host_port({}) is None
