"""What a lifecycle job reports back to the request waiting for it, and how errors map.

Errors are mapped by kind, not by where they surfaced: a state conflict is 409, an engine or
router that is down is 503 (retry later), anything unforeseen is 500 and logged.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from minipaas.router.errors import RouterError
from minipaas.runtime import RuntimeFailure
from minipaas.services.deployments.outcome import DeploymentFailed
from minipaas.services.errors import (
    Conflict,
    InternalError,
    NotFound,
    ServiceError,
    Unavailable,
)

log = logging.getLogger(__name__)


class FailureKind(enum.StrEnum):
    CONFLICT = "conflict"  # the action does not fit the app's state (409)
    NOT_FOUND = "not-found"  # the app went away meanwhile (404)
    UNAVAILABLE = "unavailable"  # the engine, router or database is down: retry (503)
    INTERNAL = "internal"  # a bug; the worker log has the traceback (500)


_ERROR_OF_KIND: dict[FailureKind, type[ServiceError]] = {
    FailureKind.CONFLICT: Conflict,
    FailureKind.NOT_FOUND: NotFound,
    FailureKind.UNAVAILABLE: Unavailable,
    FailureKind.INTERNAL: InternalError,
}


@dataclass(frozen=True)
class JobResult:
    """A job's outcome; RQ stores it, so it holds plain values only."""

    failure: FailureKind | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise _ERROR_OF_KIND[self.failure](self.message)


DONE = JobResult()


def failure_of(exc: Exception) -> JobResult:
    """The kind of an exception a job caught."""
    if isinstance(exc, ServiceError):
        for kind, error_class in _ERROR_OF_KIND.items():
            if isinstance(exc, error_class):
                return JobResult(kind, exc.message)
        return JobResult(FailureKind.CONFLICT, exc.message)
    if isinstance(exc, DeploymentFailed):  # the app itself would not start
        return JobResult(FailureKind.CONFLICT, str(exc))
    if isinstance(exc, RuntimeFailure):
        return JobResult(FailureKind.UNAVAILABLE, f"the container engine failed: {exc}")
    if isinstance(exc, RouterError):
        return JobResult(FailureKind.UNAVAILABLE, f"the router could not be updated: {exc}")
    log.error("unexpected failure in a job", exc_info=exc)
    return JobResult(
        FailureKind.INTERNAL,
        f"internal error ({type(exc).__name__}); the worker log has the details",
    )


def of_ended_job(status: str) -> JobResult:
    """A job that ended without a result: it raised, or the worker stopped it."""
    if status == "failed":
        return JobResult(
            FailureKind.INTERNAL, "the job failed in the worker; the worker log has the details"
        )
    return JobResult(FailureKind.UNAVAILABLE, f"the worker stopped the job ({status}); try again")
