"""Fixtures: a real platform (PostgreSQL, Redis, nginx, Docker, API, worker) per test session."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from minipaas.queue import get_redis
from tests.support.processes import ManagedProcess
from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything: every test is checked
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the whole platform (the `stack` fixture, also through `api`, `router`
    or any other fixture) must be marked `docker`, so `pytest -m "not docker"` leaves it out."""
    unmarked = [
        item.nodeid
        for item in items
        if "stack" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("docker") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the `stack` fixture (the whole platform: PostgreSQL, Redis, nginx "
            "and a Docker engine) but are not marked `docker`; add `pytest.mark.docker` to "
            "their module's `pytestmark`:\n  " + "\n  ".join(unmarked)
        )


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config) -> Iterator[Stack]:
    """The whole platform, started the way `make up` starts it."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:  # past pytest's capture: a slow teardown says where it went
        with capture.global_and_fixture_disabled():
            print(f"\n{line}", flush=True)

    with running_stack(report=say) as started:
        yield started


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    """The API as the admin the platform bootstrapped."""
    with httpx.Client(base_url=stack.api_url, headers=stack.admin_headers, timeout=60) as client:
        yield client


@pytest.fixture
def router(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.router_url, timeout=30) as client:
        yield client


@pytest.fixture
def app_name(request: pytest.FixtureRequest) -> str:
    """A unique, valid app name per test."""
    import secrets

    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    return f"{base}-{secrets.token_hex(3)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed platform test shows the last lines of the API and worker logs: the temp
    DATA_DIR is gone when the session ends, and CI keeps only what pytest prints."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    stack: Stack | None = getattr(item, "funcargs", {}).get("stack")
    if report.failed and stack is not None:
        for name in ("api", "worker", "supervisord", "postgres", "router"):
            log_file = stack.settings.log_dir / f"{name}.log"
            if log_file.exists():
                tail = log_file.read_text(errors="replace").splitlines()[-40:]
                report.sections.append((f"{name}.log (last 40 lines)", "\n".join(tail)))


@pytest.fixture
def second_worker(stack: Stack) -> Iterator[None]:
    """A second worker beside the stack's one, as `make up` runs several."""
    settings = stack.settings
    extra = ManagedProcess("worker-second", ("worker",), settings.run_dir, settings.log_dir)
    extra.start(stack.env)
    try:
        eventually(
            lambda: len(get_redis().smembers(f"rq:workers:{settings.queue_name}")) >= 2,
            timeout=20,
            interval=0.1,
            message="the second worker did not register",
        )
        yield
    finally:
        extra.stop()
