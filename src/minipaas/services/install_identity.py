"""Which install this is: a random id kept in DATA_DIR, stamped on what it makes in Docker.

Two installs on one host with the same INSTANCE_NAME (a second `make up` with another
DATA_DIR) would otherwise each take the other's containers for leftovers and remove them.
"""

from __future__ import annotations

import os
import re
import secrets

from minipaas.config import Settings
from minipaas.runtime.base import InstanceObject
from minipaas.runtime.docker_runtime import DockerRuntime

_WELL_FORMED = re.compile(r"[0-9a-f]{32}")


class InstallClash(Exception):
    """The engine holds another install's containers or network under this INSTANCE_NAME."""


def read_install_id(settings: Settings) -> str | None:
    try:
        text = settings.install_id_file.read_text().strip()
    except FileNotFoundError:
        return None
    if not _WELL_FORMED.fullmatch(text):
        raise InstallClash(f"{settings.install_id_file} is not an install id; restore it")
    return text


def new_install_id() -> str:
    return secrets.token_hex(16)


def ensure_install_id(settings: Settings, chosen: str | None = None) -> str:
    """This install's id, written on first use (`chosen`, or a new one)."""
    existing = read_install_id(settings)
    if existing is not None:
        return existing
    path = settings.install_id_file
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process of this install wrote it first: that one counts
        return ensure_install_id(settings)
    with os.fdopen(fd, "w") as handle:
        handle.write((chosen or new_install_id()) + "\n")
    return ensure_install_id(settings)


def check_no_other_install(
    settings: Settings, runtime: DockerRuntime, install_id: str, *, adopt_unstamped: bool
) -> None:
    """Raises InstallClash when the engine holds what another install of this INSTANCE_NAME
    made. Unstamped ones (made before install ids) are this install's only when it has run
    here before (`adopt_unstamped`): a new DATA_DIR cannot have made them."""
    found = runtime.instance_objects()
    foreign = [o for o in found if o.install_id not in (None, install_id)]
    unstamped = [] if adopt_unstamped else [o for o in found if o.install_id is None]
    if not foreign and not unstamped:
        return
    name = settings.instance_name
    lines = [
        f"another install already uses INSTANCE_NAME '{name}' on this Docker engine: "
        f"{_describe(foreign + unstamped)} {'is' if len(foreign + unstamped) == 1 else 'are'} "
        f"not this install's (DATA_DIR {settings.data_dir}), and its cleanup would remove "
        "the other install's apps.",
        f"Set a different INSTANCE_NAME for this install (for example INSTANCE_NAME={name}-2), "
        "or start the other one with its own DATA_DIR.",
    ]
    if unstamped:
        lines.append(
            "Some were made by a version without install ids: if they are this install's, "
            "start it with the DATA_DIR it ran with before."
        )
    raise InstallClash("\n".join(lines))


def _describe(objects: list[InstanceObject]) -> str:
    shown = [f"{o.kind} {o.name}" for o in objects[:3]]
    more = f" and {len(objects) - 3} more" if len(objects) > 3 else ""
    return ", ".join(shown) + more
