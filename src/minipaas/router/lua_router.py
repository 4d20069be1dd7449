"""The reload-free router: nginx starts once, routes change in its shared memory.

Routes go to nginx's Lua code over a unix control socket and are appended to a snapshot
on disk (route_snapshot.py) that nginx loads by itself whenever it starts, so a killed nginx
comes back with every route without anyone pushing them again. nginx reloads only when its
static config changes (an upgrade or new settings), never for a route.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from minipaas.config import Settings
from minipaas.files import write_atomically
from minipaas.router import tls
from minipaas.router.control import ControlClient, RouteConflictError, load_or_create_secret
from minipaas.router.dynamic_render import RouterConfig, render_router_config
from minipaas.router.errors import RouterError
from minipaas.router.nginx_process import NginxProcess
from minipaas.router.route import (
    LOOPBACK,
    Backend,
    Route,
    RouteKind,
    app_route,
    check_host_policy,
)
from minipaas.router.route_snapshot import RouteSnapshot

__all__ = ["Backend", "LuaRouter", "Route", "RouteConflictError", "RouteKind", "RouterError"]

log = logging.getLogger(__name__)


class LuaRouter:
    def __init__(
        self, settings: Settings, *, timeout: float = 5.0, supervised: bool = False
    ) -> None:
        self.settings = settings
        # Under the platform's supervisor nginx runs in the foreground as its child: this class
        # then never starts it, only installs its config and reloads it
        self.supervised = supervised
        self.dir = settings.nginx_dir
        self.conf = self.dir / "router.conf"
        self.snapshot = RouteSnapshot(self.dir / "routes")
        self.timeout = timeout
        self.process = NginxProcess(
            nginx_bin=settings.nginx_bin,
            prefix=self.dir,
            conf=self.conf,
            pid_file=settings.run_dir / "nginx.pid",
        )
        # The old reload-based router takes the same lock: one of them acts on nginx at a time
        self._lock_file = self.dir / ".lock"
        self._client: ControlClient | None = None

    # --- routes ----------------------------------------------------------------------------

    def route(
        self,
        *,
        app_id: int,
        app_name: str,
        kind: RouteKind,
        port: int | None = None,
        domains: Iterable[str] = (),
        more_backends: Iterable[Backend] = (),
        address: str = LOOPBACK,
    ) -> Route:
        """An app's usual route: <name>.<APPS_DOMAIN> and its own domains (ValueError if bad)."""
        return app_route(
            app_id=app_id,
            app_name=app_name,
            kind=kind,
            port=port,
            apps_domain=self.settings.apps_domain,
            domains=domains,
            more_backends=more_backends,
            address=address,
        )

    def set_route(self, route: Route) -> None:
        """Makes one app's route live, in O(1) whatever the table's size.

        ValueError: a host the app may not have. RouteConflictError: another app has one of
        its hosts. RouterError: nginx down or refusing; the previous route keeps serving.
        """
        self._check_policy(route)
        with self._locked():
            self._put(route)

    def publish(self, app_id: int, read_route: Callable[[], Route | None]) -> None:
        """Sets (or, for None, removes) the app's route as `read_route` finds it, read under
        the lock: two publishes of one app cannot land in the wrong order."""
        with self._locked():
            route = read_route()
            if route is None:
                self._delete(app_id)
                return
            if route.app_id != app_id:
                raise ValueError(f"route of app {route.app_id} published as app {app_id}'s")
            self._check_policy(route)
            self._put(route)

    def remove_route(self, app_id: int) -> None:
        """The app answers 404 by path and by host from now on."""
        with self._locked():
            self._delete(app_id)

    def _put(self, route: Route) -> None:
        """Under the lock: nginx first, then the snapshot (it holds only what nginx took)."""
        self._control().request("PUT", f"/apps/{route.app_id}", route.to_json())
        self._persist(lambda: self.snapshot.record_set(route))

    def _delete(self, app_id: int) -> None:
        self._control().request("DELETE", f"/apps/{int(app_id)}")
        self._persist(lambda: self.snapshot.record_remove(app_id))

    def replace_all(self, routes: Iterable[Route]) -> None:
        """Exactly these routes, every other app removed."""
        table = self._checked_table(routes)
        with self._locked():
            self._replace(table)

    def sync(self, read_routes: Callable[[], Iterable[Route]]) -> bool:
        """The reconciler's full sync: the table as `read_routes` finds it, read under the
        lock like publish(), so a route published meanwhile is never overwritten by an older
        read. True if the live table had drifted and was replaced."""
        with self._locked():
            table = self._checked_table(read_routes())
            if self.live_table() == {route.app_id: route for route in table}:
                return False
            self._replace(table)
            return True

    def _checked_table(self, routes: Iterable[Route]) -> list[Route]:
        """The routes in app order, without any the host policy refuses: one app's bad route
        (made before a rule existed, say) must not keep every other app's from syncing."""
        table = []
        for route in sorted(routes, key=lambda r: r.app_id):
            try:
                self._check_policy(route)
            except ValueError as exc:
                log.error("route of app %s left out of the router's table: %s", route.app_id, exc)
                continue
            table.append(route)
        _check_unique(table)
        return table

    def _replace(self, table: list[Route]) -> None:
        """Under the lock."""
        body = {"routes": [route.to_json() for route in table]}
        self._control().request("PUT", "/apps", body)
        self._persist(lambda: self.snapshot.write_all(table))

    def live_table(self) -> dict[int, Route]:
        """What nginx serves now, by app id (compare with the database to find drift)."""
        answer = self._control().request("GET", "/apps")
        try:
            routes = [Route.from_json(data) for data in answer["routes"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RouterError(f"nginx holds a route mini-paas cannot read: {exc}") from exc
        return {route.app_id: route for route in routes}

    def in_flight(self, backend: Backend) -> int:
        """Requests nginx is proxying to the backend (address:port) right now."""
        answer = self._control().request("GET", f"/inflight/{backend}")
        return int(answer.get("requests", 0))

    def traffic_totals(self) -> Any:
        """Per-app cumulative traffic counters as nginx holds them (traffic.py reads them)."""
        return self._control().request("GET", "/traffic")

    def traffic_minutes(self, app_id: int) -> Any:
        """One app's per-minute traffic counts for the last hour (traffic.py reads them)."""
        return self._control().request("GET", f"/traffic/{int(app_id)}")

    def _check_policy(self, route: Route) -> None:
        check_host_policy(
            route,
            platform_host=self.settings.platform_host,
            apps_domain=self.settings.apps_domain,
        )

    def _persist(self, write: Callable[[], None]) -> None:
        """Records a change nginx already made, so it survives nginx's next start."""
        try:
            write()
            if self.snapshot.needs_compaction():
                self.snapshot.compact()
        except OSError as exc:
            raise RouterError(
                f"the route is live but could not be saved to {self.snapshot.dir}: {exc}; "
                "nginx would lose it when it restarts before the next full sync"
            ) from exc

    def _control(self) -> ControlClient:
        if self._client is None:
            self._client = ControlClient(
                self.settings.router_control_socket,
                load_or_create_secret(self.settings),
                timeout=self.timeout,
            )
        return self._client

    # --- process ---------------------------------------------------------------------------

    def foreground_command(self) -> tuple[str, ...]:
        """nginx as the supervisor runs it (install the config first with prepare())."""
        return (
            self.settings.nginx_bin,
            "-p",
            str(self.dir),
            "-c",
            str(self.conf),
            "-g",
            "daemon off;",
        )

    def prepare(self) -> None:
        """Directories, secret and a config nginx accepts, before the supervisor starts it."""
        with self._locked():
            self._prepare_layout()
            rendered = render_router_config(self._router_config())
            if not self.conf.exists() or self.conf.read_text() != rendered.text:
                self._install_config(rendered.text)
            # A killed nginx leaves its socket file behind, and bind() would refuse it
            if self.process.pid() is None:
                self.settings.router_control_socket.unlink(missing_ok=True)

    def ensure_running(self) -> bool:
        """Starts nginx, or reloads it if its static config changed; True if it did either.

        Routes come back from the snapshot by themselves. A config nginx refuses never
        replaces the working one: RouterError says what nginx objected to. Supervised, a
        stopped nginx is the supervisor's to start: RouterError says so.
        """
        with self._locked():
            self._prepare_layout()
            rendered = render_router_config(self._router_config())
            pid = self.process.pid()
            if pid is None and self.supervised:
                raise RouterError("nginx is not running; its supervisor is restarting it")
            ours = pid is not None and self.process.runs_this_config(pid)
            if ours and self._live_version() == rendered.version:
                return False
            previous = self._install_config(rendered.text)
            try:
                if (
                    pid is not None
                    and not self.supervised
                    and (not ours or not self.settings.router_control_socket.exists())
                ):
                    # Another config's nginx (the reload-based router) holds the port, or our
                    # socket file was deleted (a reload keeps the old, unreachable socket): restart
                    self.process.stop()
                    pid = None
                if pid is None:
                    # A killed nginx leaves its socket file behind, and bind() would refuse it
                    self.settings.router_control_socket.unlink(missing_ok=True)
                    self.process.start()
                else:
                    self.process.reload(pid)
                self._wait_for_version(rendered.version)
            except RouterError:
                self._restore_config(previous)
                running = self.process.pid()
                if running is not None:
                    with suppress(OSError):
                        self.process.reload(running)
                raise
            return True

    def stop(self) -> None:
        with self._locked():
            self.process.stop()

    def pid(self) -> int | None:
        return self.process.pid()

    def is_running(self) -> bool:
        return self.process.pid() is not None

    def worker_pids(self) -> set[int]:
        return self.process.worker_pids()

    def answers(self) -> bool:
        """The public listener answers (what a process without the control socket can see)."""
        url = f"{self.settings.router_probe_url}/__router/health"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def healthy(self) -> bool:
        """Public listener answers and the control socket takes our secret."""
        return self.answers() and self._live_version() is not None

    def _live_version(self) -> str | None:
        try:
            version = self._control().request("GET", "/status").get("version")
        except (RouterError, AttributeError):
            return None
        return str(version) if version else None

    def _wait_for_version(self, version: str) -> None:
        deadline = time.monotonic() + max(self.timeout, 10.0)
        while time.monotonic() < deadline:
            if self._live_version() == version:
                return
            time.sleep(0.005)
        raise RouterError("nginx did not answer with the new configuration within 10 s")

    # --- files -----------------------------------------------------------------------------

    def _router_config(self) -> RouterConfig:
        s = self.settings
        try:
            return RouterConfig(
                nginx_dir=self.dir,
                log_dir=s.log_dir,
                run_dir=s.run_dir,
                control_socket=s.router_control_socket,
                secret_file=s.router_control_secret_file,
                snapshot_file=self.snapshot.snapshot_file,
                journal_file=self.snapshot.journal_file,
                listen=s.router_listen,
                api_address=s.api_url.removeprefix("http://"),
                platform_host=s.platform_host,
                run_as_root=os.geteuid() == 0,
                path_routes=s.router_path_routes,
                table_mb=s.router_table_mb,
                metrics=s.router_metrics,
                metrics_mb=s.router_metrics_mb,
                tls_listen=s.router_tls_listen,
                tls_dir=s.tls_dir,
                tls_mb=s.router_tls_mb,
            )
        except ValueError as exc:
            raise RouterError(f"the router cannot be configured: {exc}") from exc

    def _prepare_layout(self) -> None:
        running_as_root = os.geteuid() == 0
        for directory in (self.dir, self.settings.log_dir, self.settings.run_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.snapshot.dir.mkdir(parents=True, exist_ok=True)
        # Only the platform's own user may even reach the control socket
        socket_dir = self.settings.router_control_socket.parent
        socket_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.chmod(0o700)
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            tmp = self.dir / "tmp" / name
            tmp.mkdir(parents=True, exist_ok=True)
            if running_as_root:
                shutil.chown(tmp, user="nobody", group="nogroup")
        load_or_create_secret(self.settings)
        if self.settings.router_tls_port:
            tls.prepare_tls_dir(self.settings)  # nginx needs a certificate to start HTTPS

    def _install_config(self, text: str) -> str | None:
        """Puts `text` in place if nginx accepts it; returns the config it replaced."""
        candidate = self.conf.with_name(f"{self.conf.name}.new")
        write_atomically(candidate, text)
        problem = self.process.check(candidate)
        if problem is not None:
            candidate.unlink(missing_ok=True)
            raise RouterError(f"nginx refused the router configuration: {problem}")
        previous = self.conf.read_text() if self.conf.exists() else None
        os.replace(candidate, self.conf)
        return previous

    def _restore_config(self, previous: str | None) -> None:
        if previous is None:
            self.conf.unlink(missing_ok=True)
        else:
            write_atomically(self.conf, previous)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One change at a time across processes: the journal's order is the table's order."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self._lock_file, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _check_unique(routes: list[Route]) -> None:
    owners: dict[str, int] = {}
    seen: set[int] = set()
    for route in routes:
        if route.app_id in seen:
            raise ValueError(f"app {route.app_id} has two routes")
        seen.add(route.app_id)
        for host in route.hosts:
            if host in owners:
                raise ValueError(f"host {host} is listed by apps {owners[host]} and {route.app_id}")
            owners[host] = route.app_id
