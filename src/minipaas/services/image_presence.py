"""Is an app's image on the host? Said at create and change, not first at the deploy."""

from __future__ import annotations

import logging

from minipaas.db.run_settings import PullPolicy
from minipaas.runtime import RuntimeFailure, get_runtime
from minipaas.services.errors import InvalidRequest

log = logging.getLogger(__name__)


def check_image_present(image: str, pull_policy: PullPolicy | str) -> str | None:
    """422 when the image is missing and will never be pulled; else a notice when it will be
    pulled at the deploy (None when present, or when the engine cannot tell us now)."""
    try:
        present = get_runtime().image_id(image) is not None
    except RuntimeFailure as exc:  # the engine is down: the deploy will say what is wrong
        log.info("image %s not checked: %s", image, exc)
        return None
    if present:
        return None
    if str(pull_policy) == PullPolicy.NEVER.value:
        raise InvalidRequest(
            f"image '{image}' is not on this host and pull_policy is 'never': build or load "
            "it on the host first, or use pull_policy 'if-not-present' to pull it at deploy",
            loc=("body", "image"),
        )
    return f"image '{image}' is not on this host yet: it will be pulled at the first deploy"
