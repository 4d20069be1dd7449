"""A local Redis server under DATA_DIR, bound to loopback, with an append-only file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from minipaas.host.errors import wait_listening
from minipaas.pidfile import live_pid


@dataclass(frozen=True)
class LocalRedis:
    dir: Path
    port: int
    password: str | None = None

    @property
    def pid_file(self) -> Path:
        return self.dir / "redis.pid"

    def pid(self) -> int | None:
        return live_pid(self.pid_file, "redis-server")

    @property
    def config_file(self) -> Path:
        return self.dir / "redis.conf"

    def write_config(self) -> None:
        """The supervised server's settings; a file (0600), so the password is not in `ps`."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.dir}",
            "daemonize no",
            f"pidfile {self.pid_file}",
            'logfile ""',  # to stdout: the supervisor keeps it in DATA_DIR/logs/redis.log
            # Queued jobs survive a Redis restart
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
        ]
        if self.password:
            lines.append(f"requirepass {self.password}")
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")

    def server_command(self) -> tuple[str, ...]:
        return ("redis-server", str(self.config_file))

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_listening(self.port, "redis-server", timeout)
