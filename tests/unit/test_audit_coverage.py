"""Every change goes through authentication, where its audit event is written before it runs."""

from __future__ import annotations

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from minipaas.api import deps
from minipaas.api.routes import apps, builds, cluster, domains, health, users

ROUTERS = (
    health.router,
    apps.collection,
    apps.item,
    builds.router,
    domains.router,
    users.router,
    cluster.router,
    cluster.app_router,
)
CHANGES = [
    route
    for router in ROUTERS
    for route in router.routes
    if isinstance(route, APIRoute) and route.methods & deps.AUDITED_METHODS
]


# The two ways a request is authenticated; each opens a write's audit event
# (tests/integration/test_auth.py has a write of each kind)
AUTHENTICATING = (deps._current_user, deps._token_check)


def _authenticates(dependant: Dependant) -> bool:
    return dependant.call in AUTHENTICATING or any(
        _authenticates(sub) for sub in dependant.dependencies
    )


def test_there_are_changes_to_check() -> None:
    assert len(CHANGES) > 10


@pytest.mark.parametrize("route", CHANGES, ids=lambda r: f"{sorted(r.methods)} {r.path}")
def test_each_change_authenticates_so_it_is_audited_first(route: APIRoute) -> None:
    assert _authenticates(route.dependant)
