"""Pid files that may be stale: a pid only counts if it still runs the expected program."""

from __future__ import annotations

import os
from pathlib import Path


def live_pid(pid_file: Path, program: str) -> int | None:
    """The pid in pid_file if that process is alive and its command line mentions program.

    After a reboot a pid file can name an unrelated process; never signal that one.
    """
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if program.encode() in cmdline else None
