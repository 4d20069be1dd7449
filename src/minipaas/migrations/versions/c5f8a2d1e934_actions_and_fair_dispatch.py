"""lifecycle actions as rows, and deployments that wait for their owner's slot

Revision ID: c5f8a2d1e934
Revises: a4e1c9b7d203
Create Date: 2026-11-27 15:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c5f8a2d1e934"
down_revision: str | None = "a4e1c9b7d203"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIONS = ("stop", "start", "restart", "remove")
ACTION_STATUSES = ("queued", "running", "succeeded", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    # NULL while the deployment waits for a slot of its owner's (the per-member cap)
    op.add_column(
        "deployments", sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.execute("UPDATE deployments SET dispatched_at = created_at")
    op.create_index(
        "ix_deployments_waiting",
        "deployments",
        ["id"],
        postgresql_where=sa.text("status = 'queued' AND dispatched_at IS NULL"),
    )
    op.create_table(
        "app_actions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "app_id", sa.Integer(), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column(
            "requested_by_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("failure", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(_in("action", ACTIONS), name="app_action_kind"),
        sa.CheckConstraint(_in("status", ACTION_STATUSES), name="app_action_status"),
    )
    op.create_index("ix_app_actions_app_id_id", "app_actions", ["app_id", "id"])
    # At most one pending action per app (what the Redis claim did, now in the database)
    op.create_index(
        "uq_app_actions_one_pending_per_app",
        "app_actions",
        ["app_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("uq_app_actions_one_pending_per_app", table_name="app_actions")
    op.drop_index("ix_app_actions_app_id_id", table_name="app_actions")
    op.drop_table("app_actions")
    op.drop_index("ix_deployments_waiting", table_name="deployments")
    op.drop_column("deployments", "dispatched_at")
