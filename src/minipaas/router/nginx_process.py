"""One nginx master process: check a config, start, reload, stop, list its workers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from minipaas.pidfile import live_pid
from minipaas.router.errors import RouterError


class NginxProcess:
    def __init__(self, *, nginx_bin: str, prefix: Path, conf: Path, pid_file: Path) -> None:
        self.nginx_bin = nginx_bin
        self.prefix = prefix
        self.conf = conf
        self.pid_file = pid_file

    def _run(self, conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
        command = [self.nginx_bin, "-p", str(self.prefix), "-c", str(conf), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def check(self, conf: Path) -> str | None:
        """None if nginx accepts `conf`, else what it says is wrong."""
        result = self._run(conf, "-t", "-q")
        if result.returncode == 0:
            return None
        return (result.stderr or result.stdout).strip() or f"nginx -t exited {result.returncode}"

    def pid(self) -> int | None:
        return live_pid(self.pid_file, "nginx")

    def runs_this_config(self, pid: int) -> bool:
        """Whether the master was started with our config file (not, say, the old router's)."""
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        # nginx rewrites its title into one space-separated string ("nginx: master process ...")
        return str(self.conf).encode() in raw.replace(b"\0", b" ").split()

    def start(self) -> None:
        """Starts the master (it daemonizes); raises RouterError with nginx's own words."""
        result = self._run(self.conf)
        if result.returncode != 0:
            raise RouterError(f"nginx did not start: {(result.stderr or result.stdout).strip()}")

    def reload(self, pid: int) -> None:
        os.kill(pid, signal.SIGHUP)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop: in-flight requests finish (at most worker_shutdown_timeout)."""
        pid = self.pid()
        if pid is None:
            return
        workers = self.worker_pids()
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
            _alive(pid) or any(_alive(worker) for worker in workers)
        ):
            time.sleep(0.02)

    def worker_pids(self) -> set[int]:
        master = self.pid()
        if master is None:
            return set()
        children: set[int] = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == master:
                children.add(int(stat.parent.name))
        return children


def _alive(pid: int) -> bool:
    """Alive and not a zombie (a killed worker stays one until its parent reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
