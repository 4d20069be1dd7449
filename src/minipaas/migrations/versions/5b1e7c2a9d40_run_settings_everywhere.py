"""run settings everywhere; deployments remember when they switched the route

Deployments and releases snapshot the whole run settings, health check included, so a rollback
probes the way its release did. Rows from before snapshots get their app's current values.
route_switched_at: after it, a deployment can no longer be cancelled.

Revision ID: 5b1e7c2a9d40
Revises: d97fff3047cf
Create Date: 2026-11-27 12:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b1e7c2a9d40"
down_revision: str | None = "d97fff3047cf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SNAPSHOTS = ("deployments", "releases")
# Deployment columns that older rows left empty (the worker fell back to the app's values)
_DEPLOYMENT_GAPS = ("memory_mb", "cpus", "pids", "pull_policy")


def upgrade() -> None:
    op.add_column(
        "deployments", sa.Column("route_switched_at", sa.DateTime(timezone=True), nullable=True)
    )
    for table in _SNAPSHOTS:
        op.add_column(
            table,
            sa.Column(
                "health_check_path", sa.String(length=255), server_default="/", nullable=False
            ),
        )
        op.add_column(table, sa.Column("health_check_running_seconds", sa.Integer()))
        # The best known value for older rows: the app's health check today
        op.execute(
            f"UPDATE {table} AS t SET health_check_path = a.health_check_path, "
            "health_check_running_seconds = a.health_check_running_seconds "
            "FROM apps AS a WHERE t.app_id = a.id"
        )
    op.execute(
        "UPDATE deployments AS d SET env_ciphertext = a.env_ciphertext, env_names = a.env_names "
        "FROM apps AS a WHERE d.app_id = a.id AND d.env_names IS NULL"
    )
    for column in _DEPLOYMENT_GAPS:
        op.execute(
            f"UPDATE deployments AS d SET {column} = a.{column} "
            f"FROM apps AS a WHERE d.app_id = a.id AND d.{column} IS NULL"
        )
    with op.batch_alter_table("deployments") as batch:
        batch.alter_column("env_names", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("memory_mb", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("cpus", existing_type=sa.Float(), nullable=False)
        batch.alter_column("pids", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("pull_policy", existing_type=sa.String(length=32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.alter_column("pull_policy", existing_type=sa.String(length=32), nullable=True)
        batch.alter_column("pids", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("cpus", existing_type=sa.Float(), nullable=True)
        batch.alter_column("memory_mb", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("env_names", existing_type=sa.JSON(), nullable=True)
    for table in reversed(_SNAPSHOTS):
        op.drop_column(table, "health_check_running_seconds")
        op.drop_column(table, "health_check_path")
    op.drop_column("deployments", "route_switched_at")
