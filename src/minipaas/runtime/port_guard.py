"""Keeps app containers away from the host-mode ports of other apps' replicas (RUNTIME=swarm).

Swarm binds a host-mode published port on all of a node's interfaces, so a container could
reach another app's replica at its host's address, past the router. A container's packets to
its own host arrive on the host through the bridge it is attached to: docker_gwbridge for a
Swarm task (its overlay network has no path to the host), the build's own network's bridge
(`mpbuild-...`) for a build's RUN steps, docker0 for any other container on the host.
Docker excludes docker_gwbridge from its DNAT of published ports, so these packets go to the
host's INPUT chain (to docker-proxy), never to FORWARD/DOCKER-USER: rejecting them there is
enough. The router, the prober and the healer run on the host itself: their connections come
in on `lo` (127.0.0.1 or the node's address alike) and are not touched.

Only this host (the manager) is covered; other nodes need the operator's firewall (README).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from minipaas.runtime.builder import BUILD_BRIDGE_PREFIX

# iptables allows 28 characters in a chain's name
CHAIN = "MINIPAAS-SWARM-PORTS"
# The bridges a container's packets to its host come in on ("+" ends a prefix for iptables)
CONTAINER_INTERFACES = ("docker_gwbridge", "docker0", f"{BUILD_BRIDGE_PREFIX}+")
# Docker calls `iptables` from PATH (iptables-nft or -legacy, as the alternatives say): the
# same binary keeps our rules in the tables Docker uses
IPTABLES = "iptables"
TIMEOUT_SECONDS = 30
# The chain is the host's, shared by every install on it (two may start at once): so is the
# lock around its check-then-create
HOST_LOCK_FILE = Path("/var/lock/minipaas-swarm-ports.lock")


class PortGuardError(Exception):
    """The rules could not be read or written (no iptables, not root, ...)."""


def guard_rules(ports: range) -> list[list[str]]:
    """The chain's rules: a reset (an instant "connection refused"), not a silent drop."""
    match = ["-p", "tcp", "-m", "tcp", "--dport", f"{ports.start}:{ports.stop - 1}"]
    reject = ["-j", "REJECT", "--reject-with", "tcp-reset"]
    return [["-A", CHAIN, "-i", interface, *match, *reject] for interface in CONTAINER_INTERFACES]


def install_port_guard(ports: range) -> None:
    """Idempotent: the chain holds exactly guard_rules(ports), and INPUT jumps to it once."""
    if not _succeeds("-n", "-L", CHAIN):
        _run("-N", CHAIN)
    wanted = guard_rules(ports)
    if _chain_rules() != wanted:
        _run("-F", CHAIN)
        for rule in wanted:
            _run(*rule)
    if not _succeeds("-C", "INPUT", "-j", CHAIN):
        _run("-I", "INPUT", "1", "-j", CHAIN)


def _chain_rules() -> list[list[str]]:
    listed = _run("-S", CHAIN).splitlines()
    return [line.split() for line in listed if line.startswith("-A ")]


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which(IPTABLES)
    if binary is None:
        raise PortGuardError(f"{IPTABLES} is not installed: app ports cannot be firewalled")
    # -w: wait for the xtables lock Docker holds while it writes its own rules
    return subprocess.run(
        [binary, "-w", *args], capture_output=True, text=True, timeout=TIMEOUT_SECONDS
    )


def _succeeds(*args: str) -> bool:
    return _iptables(*args).returncode == 0


def _run(*args: str) -> str:
    done = _iptables(*args)
    if done.returncode != 0:
        raise PortGuardError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout
