"""Build networks: named after the build, with bridges one firewall pattern matches."""

from __future__ import annotations

from minipaas.config import Settings
from minipaas.runtime.builder import BUILD_BRIDGE_PREFIX, bridge_name
from minipaas.runtime.port_guard import guard_rules
from minipaas.services.builds.naming import build_id_of_key, build_key


def test_a_build_key_names_its_build_and_nothing_else_does() -> None:
    settings = Settings(instance_name="mypaas")
    assert build_key(settings, 42) == "mypaas-build-42"
    assert build_id_of_key(settings, "mypaas-build-42") == 42
    for other in ("mypaas-build-", "mypaas-build-4x", "other-build-42", "mypaas-apps"):
        assert build_id_of_key(settings, other) is None


def test_build_bridges_fit_linux_names_and_the_hosts_chain_matches_them() -> None:
    names = {bridge_name(f"mp-build-{n}") for n in range(1000)}
    assert len(names) == 1000  # distinct per network
    assert all(len(n) <= 15 and n.startswith(BUILD_BRIDGE_PREFIX) for n in names)
    interfaces = [rule[rule.index("-i") + 1] for rule in guard_rules(range(20000, 30000))]
    assert f"{BUILD_BRIDGE_PREFIX}+" in interfaces
