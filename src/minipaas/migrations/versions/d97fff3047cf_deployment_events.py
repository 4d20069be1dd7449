"""deployment events

Revision ID: d97fff3047cf
Revises: 0d0af0220b44
Create Date: 2026-11-27 07:18:05.507679
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d97fff3047cf"
down_revision: str | None = "0d0af0220b44"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_deployment_events_deployment_id_id",
        "deployment_events",
        ["deployment_id", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_deployment_events_deployment_id_id", table_name="deployment_events")
    op.drop_table("deployment_events")
