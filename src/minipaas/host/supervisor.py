"""The platform's processes under supervisord: restarted with backoff when they die.

`make up` writes the config and starts supervisord (or updates the one running); at boot a
systemd unit (`minipaas platform install-systemd`) starts the same supervisord in the
foreground. Each program starts through host/service_exec.py, which ends what an earlier run
of it left behind (an orphaned nginx or API worker holding the port).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from minipaas.config import Settings
from minipaas.host.errors import HostServiceError
from minipaas.pidfile import live_pid

SUPERVISORD = "supervisord"
SUPERVISORCTL = "supervisorctl"


@dataclass(frozen=True)
class Program:
    """One supervised process."""

    name: str
    command: tuple[str, ...]
    user: str | None = None  # service_exec drops to it (PostgreSQL refuses to run as root)
    stop_signal: str = "TERM"
    stop_wait_seconds: int = 20
    priority: int = 100  # lower starts first, stops last
    stale_sockets: tuple[Path, ...] = ()  # removed before each start (service_exec)
    # (pid file, process name): removed before a start when its pid is not that process
    stale_pidfiles: tuple[tuple[Path, str], ...] = ()
    numprocs: int = 1  # more than one: processes <name>-0, <name>-1, ... (a group)
    extra_env: dict[str, str] = field(default_factory=dict)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.data_dir / "supervisor"
        self.conf = self.dir / "supervisord.conf"
        self.env_file = self.dir / "env.json"
        self.socket = settings.run_dir / "supervisor.sock"
        self.pid_file = settings.run_dir / "supervisord.pid"

    # --- config ----------------------------------------------------------------------------

    def write(self, programs: list[Program], env: dict[str, str]) -> None:
        """The config and the environment every program starts with (both 0600)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        _write_private(self.env_file, json.dumps(env, indent=1, sort_keys=True) + "\n")
        _write_private(self.conf, self.render(programs))

    def render(self, programs: list[Program]) -> str:
        s = self.settings
        parts = [
            "; Written by mini-paas (`make up`); rewritten on every start, do not edit.",
            "[unix_http_server]",
            f"file = {self.socket}",
            "chmod = 0700",
            "",
            "[supervisord]",
            f"pidfile = {self.pid_file}",
            f"logfile = {s.log_dir}/supervisord.log",
            "logfile_maxbytes = 10MB",
            "logfile_backups = 3",
            f"childlogdir = {s.log_dir}",
            f"directory = {s.data_dir}",
            f"identifier = minipaas-{s.instance_name}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl = unix://{self.socket}",
            "",
        ]
        for program in programs:
            parts += self._program(program)
        return "\n".join(parts)

    def _program(self, program: Program) -> list[str]:
        # supervisord expands %(process_num)d; each process of a group records its own group
        member = f"{program.name}-%(process_num)d" if program.numprocs > 1 else program.name
        wrapper = [
            sys.executable,
            "-m",
            "minipaas.host.service_exec",
            "--env",
            str(self.env_file),
        ]
        if program.user:
            wrapper += ["--user", program.user]
        for socket in program.stale_sockets:
            wrapper += ["--stale-socket", str(socket)]
        for pidfile, process_name in program.stale_pidfiles:
            wrapper += ["--stale-pidfile", f"{pidfile}:{process_name}"]
        command = " ".join(_quote(arg) for arg in [*wrapper, "--", *program.command])
        group_file = self.group_file(member)  # a safe path: never needs quoting
        log = self.settings.log_dir / f"{member}.log"
        command = command.replace(" -- ", f" --group-file {group_file} -- ", 1)
        lines = [
            f"[program:{program.name}]",
            f"command = {command}",
            "autostart = true",
            # Any exit is restarted; supervisord waits 1 s more before each further try
            "autorestart = true",
            "startsecs = 1",
            "startretries = 1000",
            f"stopsignal = {program.stop_signal}",
            f"stopwaitsecs = {program.stop_wait_seconds}",
            # The whole process group goes: an nginx or API worker never outlives a stop
            "stopasgroup = true",
            "killasgroup = true",
            f"priority = {program.priority}",
            "redirect_stderr = true",
            f"stdout_logfile = {log}",
            "stdout_logfile_maxbytes = 10MB",
            "stdout_logfile_backups = 3",
        ]
        if program.numprocs > 1:
            lines += [
                f"numprocs = {program.numprocs}",
                "process_name = %(program_name)s-%(process_num)d",
            ]
        if program.extra_env:
            pairs = ",".join(f'{k}="{v}"' for k, v in sorted(program.extra_env.items()))
            lines.append(f"environment = {pairs}")
        return [*lines, ""]

    def group_file(self, name: str) -> Path:
        return self.settings.run_dir / "groups" / f"{name}.pgid"

    def group_files(self) -> list[Path]:
        """Every process's recorded group (worker-0, worker-1, ... for a group of programs)."""
        return sorted((self.settings.run_dir / "groups").glob("*.pgid"))

    # --- the daemon ------------------------------------------------------------------------

    def pid(self) -> int | None:
        return live_pid(self.pid_file, "supervisord")

    def start_or_update(self) -> None:
        """Starts supervisord, or makes the running one take the new config."""
        if shutil.which(SUPERVISORD) is None:
            raise HostServiceError("supervisord is not installed: apt-get install supervisor")
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        if self.pid() is None:
            self.socket.unlink(missing_ok=True)
            result = subprocess.run(
                [SUPERVISORD, "-c", str(self.conf)], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise HostServiceError(f"supervisord did not start: {result.stderr.strip()}")
            self._wait_for_socket()
            return
        self.ctl("reread")
        self.ctl("update")
        self.ctl("start", "all")

    def _wait_for_socket(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ctl("pid", check=False).strip().isdigit():
                return
            time.sleep(0.1)
        raise HostServiceError(f"supervisord did not answer on {self.socket}")

    def ctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [SUPERVISORCTL, "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        # supervisorctl exits non-zero for "not running" states too: callers that care check
        if check and result.returncode not in (0, 3):
            raise HostServiceError(
                f"supervisorctl {' '.join(args)}: {(result.stdout + result.stderr).strip()}"
            )
        return result.stdout

    def program_pid(self, name: str) -> int | None:
        """The pid of program `name` (of its first process if it is a group)."""
        if self.pid() is None:
            return None
        status = self.status()
        if name not in status and f"{name}:{name}-0" in status:
            name = f"{name}:{name}-0"
        out = self.ctl("pid", name, check=False).strip()
        return int(out) if out.isdigit() and int(out) > 0 else None

    def status(self) -> dict[str, str]:
        """Program name -> supervisord's state line (RUNNING, STARTING, BACKOFF, ...)."""
        if self.pid() is None:
            return {}
        rows = {}
        for line in self.ctl("status", check=False).splitlines():
            name, _, rest = line.partition(" ")
            if name:
                rows[name] = " ".join(rest.split())
        return rows

    def shutdown(self, timeout: float = 90.0) -> None:
        """Stops every program (whole process groups), then supervisord itself."""
        pid = self.pid()
        if pid is None:
            return
        self.ctl("shutdown", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)


def _quote(arg: str) -> str:
    # supervisord splits `command` like a shell; '%' starts its own expansions
    escaped = arg.replace("%", "%%")
    if escaped and all(c.isalnum() or c in "-_./=:,+@" for c in escaped):
        return escaped
    return "'" + escaped.replace("'", "'\"'\"'") + "'"


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
