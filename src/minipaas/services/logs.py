"""Reading an app's container output."""

from __future__ import annotations

from sqlalchemy.orm import Session

from minipaas.runtime import EngineUnavailable, get_runtime
from minipaas.services.apps import get_app
from minipaas.services.errors import Unavailable


def app_logs(*, db: Session, app_id: int, tail: int | None, timestamps: bool) -> str:
    """stdout and stderr of the app's current container; empty when it has none."""
    app = get_app(db=db, app_id=app_id)
    if app.container_id is None:
        return ""
    try:
        return get_runtime().logs(app.container_id, tail=tail, timestamps=timestamps)
    except EngineUnavailable as exc:
        raise Unavailable(str(exc)) from None
