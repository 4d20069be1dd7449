"""A throw-away PostgreSQL cluster for tests that need only the database, not the platform."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from minipaas.host.postgres import LocalPostgres
from tests.support.stack import free_port


@contextmanager
def throwaway_postgres() -> Iterator[LocalPostgres]:
    """A cluster of its own on a free loopback port, deleted afterwards."""
    top = Path(tempfile.mkdtemp(prefix="minipaas-test-pg-"))
    top.chmod(0o711)  # PostgreSQL runs as its own user, which must reach its data directory
    cluster = LocalPostgres(
        data_dir=top / "postgres" / "data",
        port=free_port(),
        user="minipaas",
        password=secrets.token_urlsafe(12),
        database="minipaas",
    )
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(top, ignore_errors=True)
