"""Migrations against a real, empty PostgreSQL database: up, down, up again.

Needs only PostgreSQL's server binaries: the test runs its own throw-away cluster, not the
whole platform (so `pytest -m "not docker"` runs it too).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, create_engine, inspect

from minipaas.db import migrate
from minipaas.db.models import Base
from minipaas.host.postgres import LocalPostgres
from tests.support.postgres import throwaway_postgres

pytestmark = [pytest.mark.postgres]


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    with throwaway_postgres() as cluster:
        yield cluster


def test_upgrade_from_empty_downgrade_and_upgrade_again(postgres: LocalPostgres) -> None:
    postgres.create_database("migrations_check")
    url = URL.create(
        "postgresql+psycopg",
        username=postgres.user,
        password=postgres.password,
        host="127.0.0.1",
        port=postgres.port,
        database="migrations_check",
    )
    url_text = url.render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        migrate.upgrade("head", database_url=url_text)
        assert {"apps", "deployments", "alembic_version"} <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            # the models and the migrations describe the same schema
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []

        migrate.downgrade("base", database_url=url_text)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

        migrate.upgrade("head", database_url=url_text)
        assert {"apps", "deployments"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
