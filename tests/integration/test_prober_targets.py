"""The prober checks a replica with the health check of the deployment that started it.

Between a rollback's route switch and its success the app's row still holds the settings the
rollback moves away from: probing with those would fail a healthy replica out of the route.
The rows are never committed, so the stack's worker never sees these made-up apps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from minipaas.db.models import App, AppReplica, AppStatus, Deployment, DeploymentStatus
from minipaas.db.run_settings import RunSettings
from minipaas.db.session import get_session
from minipaas.runtime.base import Endpoint
from minipaas.worker.prober import targets_in
from tests.support.rows import run_settings
from tests.support.stack import Stack

pytestmark = [pytest.mark.docker]


def _run(path: str, seconds: int | None = None) -> RunSettings:
    return run_settings(health_check_path=path, health_check_running_seconds=seconds)


@pytest.fixture
def db(stack: Stack) -> Iterator[Session]:
    with get_session() as session:
        yield session
        session.rollback()


def _app_serving(
    db: Session, app_name: str, *, app_path: str, current: RunSettings, new: RunSettings
) -> App:
    """An app whose current deployment ran `current` and whose route already switched to a
    container started by a newer deployment running `new` (not yet marked succeeded)."""
    app = App(name=app_name, status=AppStatus.RUNNING)
    app.set_run_settings(_run(app_path))
    db.add(app)
    db.flush()
    old = Deployment(app_id=app.id, status=DeploymentStatus.SUCCEEDED, container_id="c-old")
    old.set_run_settings(current)
    switched = Deployment(app_id=app.id, status=DeploymentStatus.RUNNING, container_id="c-new")
    switched.set_run_settings(new)
    db.add_all([old, switched])
    db.flush()
    app.current_deployment_id = old.id
    app.container_id, app.container_name, app.published_port = "c-new", "c-new", 1
    db.flush()
    return app


def _path_of(db: Session, app: App) -> str | None:
    (target,) = [t for t in targets_in(db) if t.app_id == app.id]
    return target.path


def test_a_switched_replica_is_probed_with_its_own_deployment_health_check(
    db: Session, app_name: str
) -> None:
    app = _app_serving(
        db,
        app_name,
        app_path="/edited-since",
        current=_run("/health-of-today"),
        new=_run("/health-of-release-1"),
    )
    assert _path_of(db, app) == "/health-of-release-1"


def test_a_deployment_without_an_http_health_page_is_probed_for_any_answer(
    db: Session, app_name: str
) -> None:
    app = _app_serving(
        db, app_name, app_path="/edited-since", current=_run("/old"), new=_run("/", seconds=5)
    )
    assert _path_of(db, app) is None


def test_a_container_no_deployment_started_falls_back_to_the_current_deployment(
    db: Session, app_name: str
) -> None:
    app = _app_serving(
        db, app_name, app_path="/edited-since", current=_run("/current"), new=_run("/new")
    )
    app.container_id = "c-promoted-spare"  # the healer promoted a replica
    db.flush()
    assert _path_of(db, app) == "/current"


def test_each_replica_is_probed_at_the_node_address_its_row_holds(
    db: Session, app_name: str
) -> None:
    app = _app_serving(db, app_name, app_path="/", current=_run("/"), new=_run("/"))
    app.published_address = "127.0.0.2"  # replica 0 runs on another node
    app.extra_replicas.append(
        AppReplica(replica=1, container_id="c-r1", container_name="c-r1", published_port=1)
    )  # no address: a row from before node addresses, on loopback
    db.flush()
    found = {t.probed.replica: t.probed.endpoint for t in targets_in(db) if t.app_id == app.id}
    assert found == {0: Endpoint("127.0.0.2", 1), 1: Endpoint("127.0.0.1", 1)}
