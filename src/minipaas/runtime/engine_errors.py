"""Engine errors as the runtime's own: what the services know how to handle."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from docker.errors import APIError, DockerException, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import Timeout as RequestsTimeout

from minipaas.runtime.base import EngineUnavailable, RuntimeFailure


@contextmanager
def engine_reachable() -> Iterator[None]:
    """Turns "cannot talk to the engine" into EngineUnavailable; API errors pass through."""
    try:
        yield
    except (RequestsConnectionError, RequestsTimeout) as exc:
        raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc


@contextmanager
def as_runtime_failure(what: str) -> Iterator[None]:
    """Any engine error becomes a RuntimeFailure the services know how to handle."""
    try:
        with engine_reachable():
            yield
    except NotFound:
        raise
    except APIError as exc:
        raise RuntimeFailure(f"{what} failed: {exc.explanation or exc}") from exc
    except DockerException as exc:
        raise RuntimeFailure(f"{what} failed: {exc}") from exc
