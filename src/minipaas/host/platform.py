"""Brings the whole platform up or down on this host (what `make up` / `make down` run)."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from minipaas.config import Settings, get_settings, worker_count
from minipaas.host.docker_engine import ensure_docker_engine
from minipaas.host.errors import HostServiceError
from minipaas.host.postgres import LocalPostgres
from minipaas.host.redis import LocalRedis
from minipaas.host.registry import embedded_registry
from minipaas.host.service_exec import end_leftovers, group_members, recorded_group
from minipaas.host.supervisor import Program, Supervisor
from minipaas.runtime import get_runtime
from minipaas.runtime.busybox_image import DEMO_IMAGE, ensure_demo_image
from minipaas.services import install_identity
from minipaas.services.bootstrap import AdminCredentials, ensure_admin

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def local_postgres(settings: Settings) -> LocalPostgres | None:
    """The cluster we manage, or None when POSTGRES_HOST points elsewhere."""
    if settings.postgres_host not in _LOOPBACK:
        return None
    return LocalPostgres(
        data_dir=settings.data_dir / "postgres" / "data",
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password,
        database=settings.postgres_db,
    )


def local_redis(settings: Settings) -> LocalRedis | None:
    if settings.redis_host not in _LOOPBACK:
        return None
    return LocalRedis(settings.data_dir / "redis", settings.redis_port, settings.redis_password)


@dataclass(frozen=True)
class SupervisedProcess:
    """One of the platform's supervised programs, as tests and `make ps` see it."""

    name: str
    supervisor: Supervisor

    def pid(self) -> int | None:
        return self.supervisor.program_pid(self.name)

    @property
    def target(self) -> str:
        """supervisorctl's name for it: a group of processes is `<name>:*`."""
        return f"{self.name}:*" if self.name in ("worker", "builder") else self.name

    def start(self, env: dict[str, str] | None = None) -> None:
        """Starts it if the supervisor holds it stopped (the environment is the platform's)."""
        self.supervisor.ctl("start", self.target, check=False)

    def stop(self) -> None:
        """Stops it (every process of a group) and keeps it stopped until start()."""
        self.supervisor.ctl("stop", self.target)


def processes(settings: Settings) -> list[SupervisedProcess]:
    supervisor = Supervisor(settings)
    return [SupervisedProcess(name, supervisor) for name in ("api", "worker")]


def service(settings: Settings, name: str) -> SupervisedProcess:
    """One program: postgres, redis, registry, router, api, worker or builder."""
    return SupervisedProcess(name, Supervisor(settings))


def programs(settings: Settings) -> list[Program]:
    """Everything `make up` runs: the local PostgreSQL and Redis, nginx, the API, the worker."""
    from minipaas.services.routing import get_router

    found: list[Program] = []
    postgres = local_postgres(settings)
    if postgres is not None:
        found.append(
            Program(
                "postgres",
                postgres.server_command(),
                user=postgres.run_as,
                stale_pidfiles=((postgres.data_dir / "postmaster.pid", "postgres"),),
                stop_signal="INT",  # fast shutdown: ends sessions, writes a checkpoint
                stop_wait_seconds=60,
                priority=10,
            )
        )
    redis = local_redis(settings)
    if redis is not None:
        found.append(Program("redis", redis.server_command(), priority=10))
    registry = embedded_registry(settings)
    if registry is not None:
        # Swarm nodes pull app images from it (RUNTIME=swarm without REGISTRY_URL)
        found.append(Program("registry", registry.server_command(), priority=10))
    found.append(
        Program(
            "router",
            get_router().foreground_command(),
            stop_signal="QUIT",
            priority=20,
            stale_sockets=(settings.router_control_socket,),
        )
    )
    minipaas = (sys.executable, "-m", "minipaas")
    # API_PROCESSES servers under one master, each on its own SO_REUSEPORT socket (balanced)
    api = (sys.executable, "-m", "minipaas.host.lifeline")
    found.append(Program("api", api, priority=30))
    # RQ's warm shutdown lets the job in progress end
    found.append(
        Program(
            "worker",
            (*minipaas, "worker"),
            stop_wait_seconds=90,
            priority=30,
            numprocs=worker_count(settings),
        )
    )
    # Builds from source on a queue of their own: a long build never holds a deploy worker
    found.append(
        Program(
            "builder",
            (*minipaas, "worker", "--builds"),
            stop_wait_seconds=30,
            priority=30,
            numprocs=settings.build_concurrency,
        )
    )
    return found


def platform_environment(settings: Settings) -> dict[str, str]:
    """What every supervised program starts with: the settings this `make up` was given
    (environment or .env), so a start at boot behaves the same."""
    env = {"MINIPAAS_SUPERVISED": "1", "DATA_DIR": str(settings.data_dir)}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[name.upper()] = str(value)
    for name in ("PATH", "LANG", "DOCKER_HOST"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def generate_local_passwords(settings: Settings) -> bool:
    """Random passwords for the PostgreSQL and Redis we run, unless the environment sets them:
    any local user could otherwise queue jobs for the root worker or edit the database."""
    created = False
    for field, path, managed in (
        ("postgres_password", settings.postgres_password_file, local_postgres(settings)),
        ("redis_password", settings.redis_password_file, local_redis(settings)),
    ):
        if managed is None or field in settings.model_fields_set or path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
        created = True
    return created


def up(settings: Settings, say: Callable[[str], None]) -> AdminCredentials:
    """Idempotent: starts what is missing under the supervisor, leaves what runs alone."""
    from minipaas.db import migrate
    from minipaas.host.backup import interrupted_restore_marker
    from minipaas.services import routing

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if interrupted_restore_marker(settings).exists():
        say(
            "WARNING: a restore was interrupted: the database and secret.key may not match. "
            "Run `minipaas platform restore FILE` again with the same archive"
        )
    if generate_local_passwords(settings):
        get_settings.cache_clear()
        settings = get_settings()
        say(f"generated passwords for the local PostgreSQL and Redis in {settings.data_dir}")
    # This process acts as one of the platform's: it must not start an nginx of its own
    os.environ[routing.SUPERVISED_ENV] = "1"
    routing.get_router.cache_clear()
    say("docker engine ...")
    ensure_docker_engine(settings.log_dir / "dockerd.log")
    _claim_instance_name(settings)  # before anything of ours could remove another's containers
    get_runtime().ensure_apps_network()  # before several workers could race to create it
    _prepare_services(settings)
    supervisor = Supervisor(settings)
    if supervisor.pid() is None:
        # Metrics of processes from an earlier run would mix with the new ones
        shutil.rmtree(settings.run_dir / "metrics", ignore_errors=True)
    say(f"supervisor (supervisord, config in {supervisor.conf}) ...")
    supervisor.write(programs(settings), platform_environment(settings))
    supervisor.start_or_update()
    _wait_for_services(settings, say)
    say("migrations ...")
    migrate.upgrade("head")
    admin = ensure_admin(settings)
    if admin.created:
        say(f"created the admin user '{admin.username}'")
    say(f"router (nginx) on {settings.router_host}:{settings.router_port} ...")
    _wait_for(lambda: routing.get_router().healthy(), "the router (nginx)", 30)
    routing.sync_routes()
    wait_until_ready(settings)
    if ensure_demo_image(get_runtime()):
        say(f"built the demo image {DEMO_IMAGE} (the README's examples deploy it)")
    return admin


def _claim_instance_name(settings: Settings) -> None:
    """Refuses to start when the engine holds another install of this INSTANCE_NAME; else
    keeps this install's id (new on the first start) in DATA_DIR."""
    try:
        existing = install_identity.read_install_id(settings)
        # An earlier version's `make up` wrote this config: what it made carries no id yet
        ran_here_before = existing is not None or Supervisor(settings).conf.exists()
        install_id = existing or install_identity.new_install_id()
        install_identity.check_no_other_install(
            settings, get_runtime(), install_id, adopt_unstamped=ran_here_before
        )
    except install_identity.InstallClash as exc:
        raise HostServiceError(str(exc)) from None
    install_identity.ensure_install_id(settings, install_id)  # written once accepted only


def _prepare_services(settings: Settings) -> None:
    """What each program needs before the supervisor starts it."""
    from minipaas.services.routing import get_router

    postgres = local_postgres(settings)
    if postgres is not None:
        postgres.prepare()
    redis = local_redis(settings)
    if redis is not None:
        redis.write_config()
    registry = embedded_registry(settings)
    if registry is not None:
        registry.write_config()
    get_router().prepare()


def _wait_for_services(settings: Settings, say: Callable[[str], None]) -> None:
    postgres = local_postgres(settings)
    if postgres is not None:
        say(f"postgresql on 127.0.0.1:{settings.postgres_port} ...")
        postgres.wait_ready()
    redis = local_redis(settings)
    if redis is not None:
        say(f"redis on 127.0.0.1:{settings.redis_port} ...")
        redis.wait_ready()
    registry = embedded_registry(settings)
    if registry is not None:
        say(f"image registry (docker-registry) on {registry.address} ...")
        registry.wait_ready()


def _wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise HostServiceError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.1)


def wait_until_ready(settings: Settings, timeout: float = 90.0) -> None:
    url = f"{settings.api_url}/health/ready"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise HostServiceError(f"the platform did not become ready within {timeout:.0f} s: {last}")


def down(settings: Settings, say: Callable[[str], None]) -> None:
    """Stops everything `up` started, and any process of this install left behind."""
    from minipaas.host.systemd import stop_unit_if_installed

    if stop_unit_if_installed():
        say("stopped the systemd unit (it starts again at boot; `systemctl disable` it to not)")
    supervisor = Supervisor(settings)
    if supervisor.pid() is not None:
        say("stopping the supervisor and every program under it")
        supervisor.shutdown()
    for group_file in supervisor.group_files():
        ended = end_leftovers(group_file)
        if ended:
            say(f"ended {len(ended)} leftover {group_file.stem} process(es)")
        # Nothing of it runs now: a number kept on disk would name another group one day
        group_file.unlink(missing_ok=True)


def status(settings: Settings) -> dict[str, str]:
    """What the supervisor says of each program, and processes it no longer watches."""
    supervisor = Supervisor(settings)
    if supervisor.pid() is None:
        rows = {"supervisor": "stopped"}
    else:
        rows = {"supervisor": f"running (pid {supervisor.pid()})", **supervisor.status()}
    for group_file in supervisor.group_files():
        orphans = _orphans(supervisor, group_file)
        if orphans:
            rows[f"{group_file.stem} (orphans)"] = f"{len(orphans)} process(es) left: {orphans}"
    return rows


def _orphans(supervisor: Supervisor, group_file: Path) -> list[int]:
    """Processes of an earlier run still alive beside (or without) the current one."""
    pgid = recorded_group(group_file)
    if pgid is None:
        return []
    member = group_file.stem
    grouped = member.startswith(("worker-", "builder-"))
    program = member.rsplit("-", 1)[0] if grouped else member
    name = f"{program}:{member}" if program != member else member
    current = supervisor.program_pid(name)
    try:
        if current is not None and os.getpgid(current) == pgid:
            return []
    except ProcessLookupError:
        pass
    return group_members(pgid)
