"""Errors map by kind: conflict 409, gone 404, engine or router down 503, anything else 500."""

from __future__ import annotations

import pickle

import pytest

from minipaas.router.errors import RouterError
from minipaas.runtime import EngineUnavailable, RuntimeFailure
from minipaas.services.deployments.outcome import DeploymentFailed
from minipaas.services.errors import Conflict, NotFound, ServiceError, Unavailable
from minipaas.services.job_results import DONE, FailureKind, JobResult, failure_of, of_ended_job


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (Conflict("cannot stop: the app is stopped"), FailureKind.CONFLICT, 409),
        (NotFound("app 3 does not exist"), FailureKind.NOT_FOUND, 404),
        (Unavailable("queue down"), FailureKind.UNAVAILABLE, 503),
        (DeploymentFailed("the container exited with code 3"), FailureKind.CONFLICT, 409),
        (EngineUnavailable("Docker engine is not reachable"), FailureKind.UNAVAILABLE, 503),
        (RuntimeFailure("stopping the container failed"), FailureKind.UNAVAILABLE, 503),
        (RouterError("nginx refused the configuration"), FailureKind.UNAVAILABLE, 503),
        (KeyError("a bug"), FailureKind.INTERNAL, 500),
    ],
)
def test_failures_map_by_kind(error: Exception, kind: FailureKind, status: int) -> None:
    result = failure_of(error)
    assert result.failure is kind and not result.ok
    with pytest.raises(ServiceError) as raised:
        result.raise_if_failed()
    assert raised.value.status_code == status


def test_a_bug_is_reported_without_its_details() -> None:
    result = failure_of(KeyError("secret internals"))
    assert "secret internals" not in result.message and "KeyError" in result.message


def test_jobs_that_ended_without_a_result() -> None:
    assert of_ended_job("failed").failure is FailureKind.INTERNAL
    assert of_ended_job("stopped").failure is FailureKind.UNAVAILABLE


def test_results_survive_the_queue() -> None:
    # RQ pickles return values into Redis
    result = JobResult(FailureKind.CONFLICT, "cannot stop")
    assert pickle.loads(pickle.dumps(result)) == result
    DONE.raise_if_failed()
    assert DONE.ok
