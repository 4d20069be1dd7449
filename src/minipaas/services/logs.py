"""Reading an app's container output."""

from __future__ import annotations

from minipaas.db.models import App
from minipaas.runtime import EngineUnavailable, get_runtime
from minipaas.services.errors import Unavailable


def app_logs(*, app: App, tail: int | None, timestamps: bool) -> str:
    """stdout and stderr of the app's current container; empty when it has none."""
    if app.container_id is None:
        return ""
    try:
        return get_runtime().logs(app.container_id, tail=tail, timestamps=timestamps)
    except EngineUnavailable as exc:
        raise Unavailable(str(exc)) from None
