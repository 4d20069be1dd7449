"""Client of the router's control endpoint (a unix socket served by nginx's Lua code)."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from minipaas.config import Settings
from minipaas.router.dynamic_render import SECRET_HEADER
from minipaas.router.errors import RouterError


class RouteConflictError(RouterError):
    """The route names a host that another app is served at."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    """One HTTP request per call over the unix socket; every failure is a RouterError."""

    def __init__(self, socket_path: Path, secret: str, *, timeout: float = 5.0) -> None:
        self.socket_path = socket_path
        self._secret = secret
        self.timeout = timeout

    def request(self, method: str, path: str, body: object = None) -> Any:
        """Sends `body` as JSON; returns the parsed answer or raises RouterError."""
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {SECRET_HEADER: self._secret, "Content-Type": "application/json"}
        # A new connection per call: connecting to a unix socket costs microseconds, and it
        # keeps one client safe to share between threads
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            status, text = response.status, response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise RouterError(f"the router's control socket {self.socket_path}: {exc}") from exc
        finally:
            connection.close()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {"error": text.strip()[:200]}
        if status == 409:
            raise RouteConflictError(_error(answer, status))
        if status != 200:
            raise RouterError(f"the router refused {method} {path}: {_error(answer, status)}")
        return answer


def _error(answer: object, status: int) -> str:
    detail = answer.get("error") if isinstance(answer, dict) else None
    return f"{detail or 'no detail'} (HTTP {status})"


def load_or_create_secret(settings: Settings) -> str:
    """The control secret: ROUTER_CONTROL_SECRET, else the one kept in DATA_DIR (made once).

    nginx reads it from the file when it starts, so a secret given by the environment is
    written there too.
    """
    path = settings.router_control_secret_file
    wanted = settings.router_control_secret
    if wanted is not None:
        value = wanted.get_secret_value()
        if not path.exists() or path.read_text().strip() != value:
            _write_private(path, value, replace=True)
        return value
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32), replace=False)
    value = path.read_text().strip()
    if len(value) < 32:
        raise RouterError(f"{path} holds a secret shorter than 32 characters; delete it")
    return value


def _write_private(path: Path, value: str, *, replace: bool) -> None:
    """Written whole to a temp file first: a reader never sees a partial secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        if replace:
            os.replace(tmp, path)
        else:
            # If two processes race to create it, the first one wins and both use that one
            os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
