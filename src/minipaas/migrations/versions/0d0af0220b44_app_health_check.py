"""app health check

Revision ID: 0d0af0220b44
Revises: 49b6a1315c47
Create Date: 2026-11-27 06:44:46.227601
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0d0af0220b44"
down_revision: str | None = "49b6a1315c47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "apps",
        sa.Column("health_check_path", sa.String(length=255), server_default="/", nullable=False),
    )
    op.add_column("apps", sa.Column("health_check_running_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("apps", "health_check_running_seconds")
    op.drop_column("apps", "health_check_path")
