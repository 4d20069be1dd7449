"""Which containers a build's output may name for a kill: never an app's, on either engine."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from minipaas.runtime.builder import _APP_CONTAINER, _docker_time


@pytest.mark.parametrize(
    "name",
    ["/mp-app3-d7", "/mp-app3-d7-r2", "/my-install-app12-d345", "/mp-app3-d7.1.k2j4x9q0w7"],
)
def test_app_containers_on_either_engine_are_recognised(name: str) -> None:
    assert _APP_CONTAINER.fullmatch(name)


@pytest.mark.parametrize("name", ["/elated_turing", "/x-app1-d2.z", "/app-d1", ""])
def test_docker_made_up_names_are_not_apps(name: str) -> None:
    assert not _APP_CONTAINER.fullmatch(name)


def test_dockers_nanosecond_times_are_read_to_the_microsecond() -> None:
    assert _docker_time("2026-11-28T13:25:01.123456789Z") == datetime(
        2026, 11, 28, 13, 25, 1, 123456, tzinfo=UTC
    )
    assert _docker_time("2026-11-28T13:25:01Z") == datetime(2026, 11, 28, 13, 25, 1, tzinfo=UTC)
    assert _docker_time("yesterday") is None
