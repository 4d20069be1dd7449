"""A local PostgreSQL cluster under DATA_DIR, bound to loopback and a unix socket."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from minipaas.host.errors import HostServiceError

# A one-host PaaS's metadata (1,000 apps are a few MiB) fits in 32 MiB of shared buffers
# (PostgreSQL's default: 128 MiB); every backend maps the buffers it reads, counted in its RSS
_SETTINGS = ("-c", "max_connections=400", "-c", "shared_buffers=32MB")


def postgres_bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1])
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise HostServiceError("PostgreSQL server binaries not found; install postgresql")


@dataclass(frozen=True)
class LocalPostgres:
    data_dir: Path  # the cluster's directory
    port: int
    user: str
    password: str
    database: str

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent / "pg-socket"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def _as_owner(self, *command: str) -> list[str]:
        # initdb and postgres refuse to run as root
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def _superuser(self) -> str:
        return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *command: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            self._as_owner(*command), input=stdin, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise HostServiceError(
                f"{Path(command[0]).name} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(path, user="postgres", group="postgres")

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized():
            return
        self._own(self.data_dir.parent)
        self._own(self.data_dir)
        self._own(self.socket_dir)
        os.chmod(self.data_dir, 0o700)
        bindir = postgres_bin_dir()
        self._run(
            str(bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self._superuser(),
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        )

    def server_command(self) -> tuple[str, ...]:
        """The server in the foreground, as the supervisor runs it (as user postgres)."""
        return (
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            *_SETTINGS,
        )

    @property
    def run_as(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def prepare(self) -> None:
        """What must exist before the supervisor starts the server."""
        self.init()
        self._own(self.socket_dir)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits for the supervised server, then makes sure the role and database exist."""
        bindir = postgres_bin_dir()
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(
                [
                    str(bindir / "pg_isready"),
                    "-q",
                    "-h",
                    str(self.socket_dir),
                    "-p",
                    str(self.port),
                ],
                check=False,
            )
            if result.returncode == 0:
                break
            if time.monotonic() >= deadline:
                raise HostServiceError(
                    "PostgreSQL did not accept connections; see DATA_DIR/logs/postgres.log "
                    f"(under the supervisor) or {self.log_file} (started by pg_ctl)"
                )
            time.sleep(0.2)
        self._ensure_role_and_database()

    def running(self) -> bool:
        bindir = postgres_bin_dir()
        result = subprocess.run(
            self._as_owner(str(bindir / "pg_ctl"), "status", "-D", str(self.data_dir)),
            capture_output=True,
            text=True,
            check=False,
        )
        return result.returncode == 0

    def start(self) -> None:
        self.init()
        self._own(self.socket_dir)
        if self.running():
            self._ensure_role_and_database()
            return
        bindir = postgres_bin_dir()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
            f"{' '.join(_SETTINGS)} -c fsync=on"
        )
        if not self.log_file.exists():
            self.log_file.touch()
        if os.geteuid() == 0:
            shutil.chown(self.log_file, user="postgres", group="postgres")
        self._run(
            str(bindir / "pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
        )
        self._ensure_role_and_database()

    def _psql(self, sql: str) -> str:
        bindir = postgres_bin_dir()
        return self._run(
            str(bindir / "psql"),
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            self._superuser(),
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-f",
            "-",
            stdin=sql,
        )

    def _ensure_role_and_database(self) -> None:
        password = self.password.replace("'", "''")
        role_exists = self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.user}';")
        verb = "ALTER" if role_exists.strip() else "CREATE"
        self._psql(f"{verb} ROLE \"{self.user}\" LOGIN PASSWORD '{password}';")
        db_exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if not db_exists.strip():
            self._psql(f'CREATE DATABASE "{self.database}" OWNER "{self.user}";')

    def create_database(self, name: str) -> None:
        """A further database owned by the platform's role (tests use it for migrations)."""
        if not name.replace("_", "").isalnum():
            raise HostServiceError("database names here are letters, digits and '_'")
        self._psql(f'DROP DATABASE IF EXISTS "{name}";')
        self._psql(f'CREATE DATABASE "{name}" OWNER "{self.user}";')

    def stop(self) -> None:
        if not self.initialized() or not self.running():
            return
        bindir = postgres_bin_dir()
        self._run(str(bindir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir))
