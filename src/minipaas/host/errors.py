"""The error every host service (PostgreSQL, Redis, the Docker engine, the platform) raises."""

from __future__ import annotations

import socket
import time


class HostServiceError(Exception):
    """A service on this host could not be installed, started or reached; one line for the user."""


def wait_listening(port: int, what: str, timeout: float = 15.0) -> None:
    """Returns once something accepts connections on 127.0.0.1:port; else HostServiceError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise HostServiceError(f"{what} did not listen on 127.0.0.1:{port}")
