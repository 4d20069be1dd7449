"""Starts a whole throw-away platform for the tests: real PostgreSQL, Redis, nginx,
Docker engine, API and worker, each on its own free loopback port under a temp DATA_DIR."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from minipaas.config import Settings
from tests.support.waiting import eventually


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    settings: Settings
    env: dict[str, str]

    @property
    def api_url(self) -> str:
        return self.settings.api_url

    @property
    def router_url(self) -> str:
        return self.settings.router_url

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env['ADMIN_TOKEN']}"}


def stack_env(data_dir: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(data_dir),
        "INSTANCE_NAME": f"mpt{secrets.token_hex(3)}",
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(free_port()),
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(free_port()),
        "POSTGRES_USER": "minipaas",
        "POSTGRES_PASSWORD": secrets.token_urlsafe(12),
        "POSTGRES_DB": "minipaas",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
        "REDIS_PASSWORD": secrets.token_urlsafe(12),
        "ROUTER_HOST": "127.0.0.1",
        "ROUTER_PORT": str(free_port()),
        # HTTPS: a file-given wildcard for the apps and the platform (tests/support/tls.py
        # made it), and ACME from a pebble that tests/e2e/test_https.py starts on this port
        "ROUTER_TLS_PORT": str(free_port()),
        **_tls_files(data_dir),
        "ACME_DIRECTORY_URL": f"https://127.0.0.1:{free_port()}/dir",
        "ACME_CA_BUNDLE": str(data_dir / "test-acme" / "ca.pem"),
        "READY_TIMEOUT_SECONDS": "20",
        "STOP_GRACE_SECONDS": "5",
        # How long a lifecycle request (stop/start/restart/remove, DELETE /apps/{id}) waits for
        # the worker before it answers 202 (default 30 s). The tests that expect 200 (done) act
        # on busybox apps run with Docker's init: a stop takes well under a second and a start
        # is healthy at once, so each is done in ~1-2 s; 10 s leaves room on a busy 2-core
        # machine. Schemathesis (test_fuzz_api.py) calls these routes in-process with random
        # and real app ids, also on apps whose start waits for health up to
        # READY_TIMEOUT_SECONDS or is queued behind deploys: those answer 202 after 10 s
        # instead of holding the fuzzing for 30 s each. A 202 is a valid answer there, and
        # the fuzzing's final check waits until the worker has run every queued job. A test
        # that needs a slow action done must poll the app, not rely on this wait.
        "ACTION_WAIT_SECONDS": "10",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "ADMIN_TOKEN": f"mp_{secrets.token_urlsafe(32)}",
        # Small quotas, so tests can reach them; every test client is 127.0.0.1, so the
        # throttle is tested in-process with its own client address instead
        "USER_MAX_APPS": "3",
        "USER_MAX_MEMORY_MB": "768",
        "MAX_MEMORY_MB": "512",
        # Few replicas per app: the API fuzzing may create and deploy apps with the most
        "APP_MAX_REPLICAS": "4",
        "AUTH_FAILURES_PER_MINUTE": "100000",
        # The reconciler's repairs show within seconds in the fault tests
        "RECONCILE_INTERVAL_SECONDS": "1",
        "KEEP_RELEASE_IMAGES": "2",
        # One worker: tests that queue a deploy behind a slow one rely on the order; the
        # parallel workers of `make up` are tested with a second worker of their own
        "WORKER_PROCESSES": "1",
        # Builds: a cap a test can pass without sending much, a memory limit a step can hit
        "BUILD_MAX_UPLOAD_MB": "20",
        "BUILD_MEMORY_MB": "256",
        **_engine_env(),
    }


def _engine_env() -> dict[str, str]:
    """RUNTIME=swarm in the test runner's environment (make test's second pass) runs the
    stack's apps on Swarm, through the platform's own embedded registry."""
    if os.environ.get("RUNTIME") != "swarm":
        return {}
    return {"RUNTIME": "swarm", "REGISTRY_PORT": str(free_port())}


def ensure_swarm_manager() -> None:
    """This engine becomes a one-node swarm on loopback if it is not in one already (never
    left again: a swarm manager runs plain containers as before)."""
    import docker

    client = docker.from_env()
    if client.info()["Swarm"]["LocalNodeState"] == "active":
        return
    try:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    except docker.errors.APIError:  # another test session made it one meanwhile
        if client.info()["Swarm"]["LocalNodeState"] != "active":
            raise


def _tls_files(data_dir: Path) -> dict[str, str]:
    from tests.support.tls import write_ca_and_leaf

    _, cert, key = write_ca_and_leaf(
        data_dir / "test-tls", ["*.apps.localhost", "minipaas.localhost"]
    )
    return {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}


def stack_tls_ca(settings: Settings) -> Path:
    """The CA of the stack's file-given certificate (TLS_CERT_FILE)."""
    return settings.data_dir / "test-tls" / "ca.pem"


def apply_env(env: dict[str, str | None]) -> None:
    """Points this process's settings at the stack (settings and clients are cached);
    a None value removes the variable."""
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    from minipaas import security
    from minipaas.config import get_settings
    from minipaas.db.session import forget_engines
    from minipaas.queue import get_redis
    from minipaas.runtime.engine import get_runtime
    from minipaas.services.routing import get_router

    forget_engines()
    for cached in (get_settings, get_redis, get_runtime, get_router):
        cached.cache_clear()
    security.reset_cache()


def wait_ready(api_url: str, timeout: float = 60.0, *, what: str = "the test platform") -> None:
    def ready() -> bool:
        response = httpx.get(f"{api_url}/health/ready", timeout=3)
        assert response.status_code == 200, response.text
        return True

    try:
        eventually(
            ready,
            timeout=timeout,
            interval=0.2,
            retry_on=(httpx.HTTPError, AssertionError),
            message=f"{what} did not become ready",
        )
    except AssertionError as exc:  # the platform failed to start: not a test's assertion
        raise RuntimeError(str(exc)) from None


@contextlib.contextmanager
def running_stack(
    *, prefix: str = "minipaas-test-", report: Callable[[str], None] | None = None
) -> Iterator[Stack]:
    """The whole platform, started by `make up`'s own code (under its supervisor), torn down
    on exit.

    Points this process's settings at the stack (see apply_env) and builds the test images.
    On exit: the supervisor stops everything (and ends any leftover process), the instance's
    containers are removed and the temp DATA_DIR is deleted.
    """
    from minipaas.config import get_settings
    from minipaas.host import platform
    from minipaas.runtime import get_runtime
    from minipaas.services.routing import SUPERVISED_ENV
    from tests.support.images import build_test_images

    # PostgreSQL runs as its own user, which must be able to reach its data directory
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    data_dir.chmod(0o711)
    env = stack_env(data_dir)
    # A second stack (a test starts its own) must hand this process back to the first
    previous: dict[str, str | None] = {
        name: os.environ.get(name) for name in [*env, SUPERVISED_ENV]
    }
    apply_env(dict(env))
    settings = get_settings()
    try:
        if settings.runtime == "swarm":
            ensure_swarm_manager()
        platform.up(settings, lambda _: None)
        build_test_images()
        wait_ready(settings.api_url)
        yield Stack(settings=settings, env=env)
    finally:
        phases = _PhaseClock()
        with contextlib.suppress(Exception):
            platform.down(settings, lambda _: None)
        phases.mark("platform down")
        # After the worker stopped, so no queued deploy creates a container behind our back
        removed = remove_instance_containers(settings.instance_name)
        phases.mark(f"{removed} containers/services removed")
        with contextlib.suppress(Exception):
            get_runtime().remove_apps_network()
        left = remove_instance_networks(settings.instance_name)
        phases.mark(f"networks removed{f' (left: {left})' if left else ''}")
        shutil.rmtree(data_dir, ignore_errors=True)
        apply_env(previous)
        phases.report_if_slow("stack teardown", slower_than=15.0, report=report)


class _PhaseClock:
    """Where a slow teardown spent its time, said past pytest's capture (sessions ended in
    35-66 s where a small stack takes 3-6 s)."""

    def __init__(self) -> None:
        self.began = self.last = time.monotonic()
        self.phases: list[str] = []

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append(f"{phase} {now - self.last:.1f} s")
        self.last = now

    def report_if_slow(
        self, what: str, *, slower_than: float, report: Callable[[str], None] | None
    ) -> None:
        total = time.monotonic() - self.began
        if total > slower_than:
            line = f"{what}: {total:.1f} s: {', '.join(self.phases)}"
            (report or partial(print, file=sys.stderr))(line)


def remove_instance_containers(instance: str) -> int:
    """Removes every container (and Swarm service) labelled as this platform instance's;
    returns how many there were.

    A whole session leaves many: one list call each (no inspect per container) and the
    removals side by side (one at a time took ~0.3 s a container here)."""
    import docker

    client = docker.from_env(max_pool_size=_REMOVERS)  # a connection for each remover
    label = {"label": f"io.minipaas.instance={instance}"}
    services: list[str] = []
    with ThreadPoolExecutor(max_workers=_REMOVERS) as pool:
        if client.info()["Swarm"]["LocalNodeState"] == "active":
            services = [str(found["ID"]) for found in client.api.services(filters=label)]
            # list() waits for every removal; an error of one does not stop the others
            list(pool.map(_quietly(client.api.remove_service), services))
        containers = [str(found["Id"]) for found in client.api.containers(all=True, filters=label)]
        list(
            pool.map(_quietly(lambda ref: client.api.remove_container(ref, force=True)), containers)
        )
    return len(containers) + len(services)


def remove_instance_networks(instance: str, timeout: float = 30.0) -> list[str]:
    """Removes what is left of this instance's networks (on Swarm, one per app); returns the
    names of those still there. A removed service's task lets go of its app's network a few
    seconds after its container is gone: until then the network is "in use", so each try
    removes what it can. A container still attached (one a test started itself) is
    disconnected first: it held a network for the whole timeout."""
    import docker

    client = docker.from_env()
    label = {"label": f"io.minipaas.instance={instance}"}

    def all_gone() -> bool:
        for network in client.api.networks(filters=label):
            with contextlib.suppress(docker.errors.APIError):
                attached = client.api.inspect_network(network["Id"]).get("Containers") or {}
                for container in attached:
                    with contextlib.suppress(docker.errors.APIError):
                        client.api.disconnect_container_from_network(
                            container, network["Id"], force=True
                        )
                client.api.remove_network(network["Id"])
        return not client.api.networks(filters=label)

    with contextlib.suppress(Exception):  # best effort, as the removals before it
        eventually(all_gone, timeout=timeout, interval=0.2, message="networks left behind")
    with contextlib.suppress(Exception):
        return [str(network["Name"]) for network in client.api.networks(filters=label)]
    return []


# 60 containers here: 11.7 s one at a time, 6.4 s with 8 side by side, 4.7 s with 16
_REMOVERS = 16


def _quietly(remove: Callable[[str], object]) -> Callable[[str], None]:
    """`remove`, with any error ignored (gone already, or going: as before, best effort)."""

    def call(ref: str) -> None:
        with contextlib.suppress(Exception):
            remove(ref)

    return call
