"""Is an app answering HTTP on its published port yet?"""

from __future__ import annotations

import http.client

from minipaas.runtime.base import Endpoint


def http_status(endpoint: Endpoint, *, path: str = "/", timeout: float = 2.0) -> int | None:
    """The status of GET path on the replica's endpoint, or None when nothing answers HTTP yet.

    Only endpoints the runtime reported come here (a node's address and the published port),
    never a host a user typed. A TCP connect is not enough: Docker's userland proxy accepts
    connections on a published port before the app inside listens.
    """
    connection = http.client.HTTPConnection(endpoint.address, endpoint.port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "minipaas-health-check"})
        response = connection.getresponse()
        response.read(1024)
        return int(response.status)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def answers(endpoint: Endpoint, *, path: str | None, timeout: float) -> bool:
    """One liveness look at a running replica: GET path answers below 500 (the deploy's own
    health check), or, for an app without an HTTP health page (path None), any HTTP answer
    at all. A frozen app accepts the connection (Docker's proxy does) and never answers."""
    status = http_status(endpoint, path=path or "/", timeout=timeout)
    return status is not None and (path is None or status < 500)
