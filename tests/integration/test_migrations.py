"""Migrations against a real, empty PostgreSQL database: up, down, up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from minipaas.db import migrate
from minipaas.db.models import Base
from minipaas.host.platform import local_postgres
from tests.support.stack import Stack


def test_upgrade_from_empty_downgrade_and_upgrade_again(stack: Stack) -> None:
    postgres = local_postgres(stack.settings)
    assert postgres is not None
    postgres.create_database("migrations_check")
    url = make_url(stack.settings.database_url).set(database="migrations_check")
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
