"""Once a deployment switched the route, a cancel is refused instead of silently ignored."""

from __future__ import annotations

import httpx
import pytest

from minipaas.clock import now
from minipaas.db.models import App, AppStatus, Deployment, DeploymentStatus
from minipaas.db.session import get_session
from minipaas.services.app_lock import app_lock
from minipaas.services.deployments.cancellation import pass_point_of_no_return
from minipaas.services.deployments.outcome import DeploymentFailed
from tests.support.flows import create_app
from tests.support.images import HELLO_V1

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.deployments]


def _running_deployment(app_id: int) -> int:
    with get_session() as db:
        app_row = db.get(App, app_id)
        assert app_row is not None
        deployment = Deployment(
            app_id=app_id,
            status=DeploymentStatus.RUNNING,
            app_status_before=AppStatus.CREATED,
            started_at=now(),
        )
        deployment.set_run_settings(app_row.run_settings())
        db.add(deployment)
        db.commit()
        return deployment.id


def _end(deployment_id: int) -> None:
    with get_session() as db:
        deployment = db.get(Deployment, deployment_id)
        assert deployment is not None
        deployment.status = DeploymentStatus.FAILED
        deployment.finished_at = now()
        db.commit()


def test_cancel_and_route_switch_exclude_each_other(api: httpx.Client, app_name: str) -> None:
    app_id = create_app(api, app_name, HELLO_V1)["id"]
    # Holding the app's lock plays the worker: the reconciler leaves the row alone meanwhile
    with app_lock(app_id):
        switched = _running_deployment(app_id)
        with get_session() as db:
            pass_point_of_no_return(db, switched)
            db.commit()
        refused = api.post(f"/apps/{app_id}/deployments/{switched}/cancel")
        assert refused.status_code == 409, refused.text
        assert "can no longer be cancelled" in refused.json()["detail"]
        _end(switched)

        # the other order: a cancel that came first stops the switch
        cancelled = _running_deployment(app_id)
        accepted = api.post(f"/apps/{app_id}/deployments/{cancelled}/cancel")
        assert accepted.status_code == 202, accepted.text
        with get_session() as db, pytest.raises(DeploymentFailed, match="cancelled"):
            pass_point_of_no_return(db, cancelled)
        _end(cancelled)
