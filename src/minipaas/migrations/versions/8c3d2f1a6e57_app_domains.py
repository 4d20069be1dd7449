"""app domains: host names of the owner's own that reach an app

Revision ID: 8c3d2f1a6e57
Revises: 5b1e7c2a9d40
Create Date: 2026-11-27 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c3d2f1a6e57"
down_revision: str | None = "5b1e7c2a9d40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hostname", name="uq_app_domains_hostname"),
    )
    op.create_index(op.f("ix_app_domains_app_id"), "app_domains", ["app_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_app_domains_app_id"), table_name="app_domains")
    op.drop_table("app_domains")
