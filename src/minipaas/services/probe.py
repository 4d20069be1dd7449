"""Is an app answering HTTP on its published port yet?"""

from __future__ import annotations

import http.client


def answers_http(port: int, *, path: str = "/", timeout: float = 2.0) -> bool:
    """True once anything answers HTTP on 127.0.0.1:port.

    A TCP connect is not enough: Docker's userland proxy accepts connections on a published
    port before the app inside listens.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "minipaas-probe"})
        response = connection.getresponse()
        response.read(1024)
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
