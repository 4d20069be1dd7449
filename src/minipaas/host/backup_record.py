"""When this install last made a backup: a small file in DATA_DIR (/metrics reads it)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from minipaas.config import Settings


@dataclass(frozen=True)
class LastBackup:
    finished_at: float  # seconds since the epoch
    path: str
    size_bytes: int
    seconds: float


def record_file(settings: Settings) -> Path:
    return settings.data_dir / "last-backup.json"


def write_last_backup(settings: Settings, last: LastBackup) -> None:
    path = record_file(settings)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(last)) + "\n")
    os.replace(tmp, path)  # a reader sees the old record or the new one


def read_last_backup(settings: Settings) -> LastBackup | None:
    try:
        data = json.loads(record_file(settings).read_text())
        return LastBackup(
            finished_at=float(data["finished_at"]),
            path=str(data["path"]),
            size_bytes=int(data["size_bytes"]),
            seconds=float(data["seconds"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
