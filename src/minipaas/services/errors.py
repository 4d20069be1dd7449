"""Errors a user can cause or see; the API maps each kind to one HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


# Where in the request a problem is, as request validation says it: ("body", "pids")
FieldPath = tuple[str | int, ...]


class InvalidRequest(ServiceError):
    """A 422 from the platform's own rules; the API answers it in request validation's shape
    (a list of {loc, msg, type}), so a client parses one thing for every 422."""

    status_code = 422

    def __init__(self, message: str, *, loc: FieldPath = ()) -> None:
        super().__init__(message)
        self.problems: list[tuple[FieldPath, str]] = [(loc, message)]

    @classmethod
    def several(cls, problems: list[tuple[FieldPath, str]]) -> InvalidRequest:
        """One answer naming every field at fault."""
        error = cls("; ".join(message for _, message in problems))
        error.problems = list(problems)
        return error


class Unavailable(ServiceError):
    status_code = 503


class Unauthorized(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class TooManyRequests(ServiceError):
    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PayloadTooLarge(ServiceError):
    status_code = 413


class InsufficientStorage(ServiceError):
    """Not enough free disk to take the work on (a build): nothing was started."""

    status_code = 507


class InternalError(ServiceError):
    """A failure nobody foresaw: a bug. The worker logged it with its traceback."""

    status_code = 500
