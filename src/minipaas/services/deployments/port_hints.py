"""Why a new container does not answer on internal_port, when that can be seen.

A wrong internal_port used to wait out the whole READY_TIMEOUT_SECONDS with identical "no HTTP
answer" lines. When the app already listens, but on other ports (or on 127.0.0.1 only), or
the image EXPOSEs other ports and nothing else can be seen, the deploy fails at once with what
to change.
"""

from __future__ import annotations

from minipaas.runtime import get_runtime
from minipaas.runtime.listening import Listener


def wrong_port_reason(container_id: str, internal_port: int) -> str | None:
    """What to change, if the container plainly does not serve on internal_port; None while
    it may still be starting (nothing listens yet, or it listens on the port)."""
    runtime = get_runtime()
    exposed = runtime.exposed_ports(container_id)
    found = runtime.listening(container_id)
    if found is None:  # /proc cannot tell: EXPOSE is the only hint
        if exposed and internal_port not in exposed:
            return (
                f"nothing answers on internal_port {internal_port}, and the image declares "
                f"{_ports(exposed)} (EXPOSE): set internal_port to the port the app listens on"
            )
        return None
    return _reason(found, internal_port, exposed)


def _reason(found: list[Listener], internal_port: int, exposed: set[int]) -> str | None:
    if not found:
        return None  # not listening yet: still starting
    on_port = [item for item in found if item.port == internal_port]
    if any(item.reachable for item in on_port):
        return None  # it listens where it should: the answer is only slow to come
    if on_port:
        return (
            f"the app listens on {', '.join(str(item) for item in on_port)} only, which the "
            f"router cannot reach: make it listen on 0.0.0.0:{internal_port}"
        )
    reachable = sorted({item.port for item in found if item.reachable})
    if not reachable:
        return None  # only loopback helpers so far; the real listener may still come
    declared = f"; the image declares {_ports(exposed)} (EXPOSE)" if exposed else ""
    return (
        f"nothing listens on internal_port {internal_port}: the app listens on "
        f"{_ports(set(reachable))}{declared}. Set internal_port to the port the app serves on"
    )


def _ports(ports: set[int]) -> str:
    listed = sorted(ports)
    return ("port " if len(listed) == 1 else "ports ") + ", ".join(map(str, listed))
