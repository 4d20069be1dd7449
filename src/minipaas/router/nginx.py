"""Writes, checks and reloads the nginx configuration; one change at a time."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from minipaas import metrics
from minipaas.config import Settings
from minipaas.pidfile import live_pid
from minipaas.router.render import render_main_config, version_of

log = logging.getLogger(__name__)


class RouterError(Exception):
    """nginx refused a configuration or could not be (re)started."""


class NginxRouter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.nginx_dir
        self.main_conf = self.dir / "nginx.conf"
        self.site_conf = self.dir / "site.conf"
        self.pid_file = settings.run_dir / "nginx.pid"
        self._lock_file = self.dir / ".lock"

    # --- files -----------------------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Creates the directories and the static nginx.conf (idempotent)."""
        running_as_root = os.geteuid() == 0
        for directory in (self.dir, self.settings.log_dir, self.settings.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            tmp = self.dir / "tmp" / name
            tmp.mkdir(parents=True, exist_ok=True)
            if running_as_root:
                shutil.chown(tmp, user="nobody", group="nogroup")
        _write_atomically(
            self.main_conf,
            render_main_config(
                nginx_dir=self.dir,
                log_dir=self.settings.log_dir,
                run_dir=self.settings.run_dir,
                run_as_root=running_as_root,
            ),
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serializes config changes and reloads across processes."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self._lock_file, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def apply(self, render: Callable[[], str], *, drain: bool = False) -> bool:
        """Renders and makes the site config live; returns False when it already was.

        With `drain`, also waits until the old nginx workers have finished their requests (at
        most worker_shutdown_timeout): a deploy does, before it stops the old container.

        `render` runs under the lock, so it reads state no older than the last change.
        A config that nginx refuses, or that does not go live, is never left in place: the
        previous file is restored (and reloaded) and RouterError says what happened.
        """
        with self.locked():
            site_text = render()
            previous = self.site_conf.read_text() if self.site_conf.exists() else None
            if previous == site_text and self._live_version() == version_of(site_text):
                return False
            _write_atomically(self.site_conf, site_text)
            problem = self._check()
            if problem is not None:
                self._restore(previous)
                metrics.ROUTER_RELOAD_FAILURES.inc()
                raise RouterError(f"nginx refused the new route configuration: {problem}")
            old_workers = self._worker_pids()
            try:
                self._reload_or_start()
                self._wait_for_version(version_of(site_text))
            except RouterError:
                self._restore(previous)
                metrics.ROUTER_RELOAD_FAILURES.inc()
                with suppress(RouterError, OSError):
                    self._reload_or_start()
                raise
            metrics.ROUTER_RELOADS.inc()
            if drain:
                self._wait_for_exit(old_workers)
            return True

    def _restore(self, previous: str | None) -> None:
        if previous is None:
            self.site_conf.unlink(missing_ok=True)
        else:
            _write_atomically(self.site_conf, previous)

    # --- process ---------------------------------------------------------------------------

    def _nginx(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [self.settings.nginx_bin, "-p", str(self.dir), "-c", str(self.main_conf), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    def _check(self) -> str | None:
        result = self._nginx("-t", "-q")
        if result.returncode == 0:
            return None
        return (result.stderr or result.stdout).strip() or f"nginx -t exited {result.returncode}"

    def pid(self) -> int | None:
        return live_pid(self.pid_file, "nginx")

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        """Starts nginx (daemonized) with the current files; no-op if it runs."""
        with self.locked():
            if not self.site_conf.exists():
                raise RouterError("no site.conf yet: publish the routes first")
            self._reload_or_start()

    def _reload_or_start(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            return
        result = self._nginx()
        if result.returncode != 0:
            raise RouterError(f"nginx did not start: {(result.stderr or result.stdout).strip()}")

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.is_running():
            time.sleep(0.05)

    def _live_version(self) -> str | None:
        """The config version nginx serves now, or None if it does not answer."""
        try:
            url = f"{self.settings.router_probe_url}/__router/version"
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.read().decode().strip())
        except (urllib.error.URLError, OSError):
            return None

    def _wait_for_version(self, version: str | None, timeout: float = 5.0) -> None:
        """Waits until nginx answers with the new config, so a switched route is really live."""
        if version is None:
            return
        url = f"{self.settings.router_probe_url}/__router/version"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.read().decode().strip() == version:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.005)  # nginx switches ~100 ms after SIGHUP; notice it promptly
        raise RouterError(f"nginx did not pick up the new configuration within {timeout:.0f} s")

    def _worker_pids(self) -> set[int]:
        master = self.pid()
        if master is None:
            return set()
        children: set[int] = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                children.add(int(stat.parent.name))
        return children

    def _wait_for_exit(self, pids: set[int], timeout: float = 11.0) -> None:
        """Old workers keep serving the old config on open connections until they exit
        (at most worker_shutdown_timeout, 10 s, after a reload)."""
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if Path(f"/proc/{pid}").exists()}
            if pids:
                time.sleep(0.01)
        if pids:
            log.warning("old nginx workers %s still running after %.0f s", sorted(pids), timeout)

    def healthy(self) -> bool:
        url = f"{self.settings.router_probe_url}/__router/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def _write_atomically(path: Path, text: str) -> None:
    # A temp file of its own: two writers (a job and the reconciler) must not share one
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
