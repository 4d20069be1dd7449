"""The answers besides success each route documents, so a client generated from /openapi.json
knows every status it can meet: one error model (`detail`), and 422 in request validation's
shape whether the request's form or the platform's rules refused it."""

from __future__ import annotations

from typing import Any

from minipaas.api.schemas import ErrorOut, ValidationErrorOut

Responses = dict[int | str, dict[str, Any]]

# What each status means on any route; a route may say more precisely
_MEANING: dict[int, tuple[str, str]] = {
    400: (
        "the body could not be read as JSON text at all (e.g. not UTF-8)",
        "There was an error parsing the body",
    ),
    401: (
        "missing, invalid, expired or revoked token",
        "missing, invalid, expired or revoked token",
    ),
    403: ("not allowed: admins only, a quota or a policy", "only admins may do this"),
    404: (
        "no such app (or not one the caller may see), or no such item of it",
        "app 42 does not exist",
    ),
    409: (
        "does not fit the current state; the message says what to do",
        "app 42 is already being deployed (queued); wait for it to end",
    ),
    413: (
        "the body is larger than the platform accepts; the message names the setting",
        "the upload is larger than BUILD_MAX_UPLOAD_MB (200 MB)",
    ),
    429: (
        "too many failed logins from this address, or too many open streams; see Retry-After",
        "too many failed logins; try again in 30 seconds",
    ),
    500: ("an unforeseen failure: a bug, logged with its traceback", "the action failed"),
    503: (
        "the database, Redis, Docker engine or router is not reachable now; try again shortly",
        "the database is not reachable; try again shortly",
    ),
    507: (
        "not enough free disk on the host to take this on; nothing was started",
        "only 900 MB free under DATA_DIR; builds need BUILD_MIN_FREE_DISK_MB (2048 MB)",
    ),
}

_VALIDATION_EXAMPLE = {
    "detail": [
        {
            "loc": ["body", "pids"],
            "msg": "pids 12985 is over the maximum of 1024",
            "type": "value_error",
        }
    ]
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def _error(status: int, description: str | None, example: str | None) -> dict[str, Any]:
    meaning, usual = _MEANING[status]
    answer: dict[str, Any] = {
        "model": ErrorOut,
        "description": description or meaning,
        "content": {"application/json": {"example": {"detail": example or usual}}},
    }
    if status == 429:
        answer["headers"] = _RETRY_AFTER
    return answer


def errors(*statuses: int, **notes: str) -> Responses:
    """The `responses=` of a route: 401, 422, 429 and 503 always (every route authenticates
    and reads the database), plus `statuses`; `notes` say more: s409="..." describes the
    status on this route, e409="..." gives an example message."""
    wanted = set(statuses) | {401, 422, 429, 503}
    documented: Responses = {}
    for status in sorted(wanted):
        description = notes.get(f"s{status}")
        if status == 422:
            documented[422] = {
                "model": ValidationErrorOut,
                "description": description
                or "the request is not valid: each problem with its field path",
                "content": {"application/json": {"example": _VALIDATION_EXAMPLE}},
            }
        else:
            documented[status] = _error(status, description, notes.get(f"e{status}"))
    return documented


# Routes under /apps/{app_id}: another user's app (or none) is a 404
APP_ITEM = (404,)
# Routes only admins may call
ADMIN = (403,)
# Routes that read a JSON body: bytes that are no text at all are a 400 (FastAPI's own)
BODY = (400,)
