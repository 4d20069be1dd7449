"""Image builds and image removals take turns on the host, across every install on it.

Docker's classic builder compares each step with the images already there to find its cache,
and fails the build ("unable to find image") when one of them is removed meanwhile. The
platform's own builds are also known from its database (services/images.a_build_is_running),
but another install (or test session) on the same engine is not: so builds hold a shared
lock on a host-wide file, and removals take it exclusively or wait for the next pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = Path("/var/lock/minipaas-images.lock")


@contextlib.contextmanager
def building(lock_file: Path = LOCK_FILE) -> Iterator[None]:
    """Held while a build runs; many builds at once are fine."""
    with _locked(lock_file, fcntl.LOCK_SH):
        yield


@contextlib.contextmanager
def removing(lock_file: Path = LOCK_FILE, *, wait_seconds: float = 0.0) -> Iterator[bool]:
    """True when no build runs on the host, which stays so until the block ends; False while
    one still does after `wait_seconds` (default: at once): remove nothing then."""
    deadline = time.monotonic() + wait_seconds
    with _locked(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB, until=deadline) as granted:
        yield granted


@contextlib.contextmanager
def _locked(lock_file: Path, operation: int, *, until: float = 0.0) -> Iterator[bool]:
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # no /var/lock to write to: each install keeps to its own builds
        log.debug("image turns without a host lock: %s", exc)
        yield True
        return
    try:
        while True:
            try:
                fcntl.flock(fd, operation)
                break
            except BlockingIOError:
                if time.monotonic() >= until:
                    yield False
                    return
                time.sleep(_RETRY_SECONDS)
        yield True
    finally:
        os.close(fd)  # the lock goes with the last descriptor


_RETRY_SECONDS = 0.1
