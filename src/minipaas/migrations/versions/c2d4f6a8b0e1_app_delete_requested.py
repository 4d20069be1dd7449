"""apps.delete_requested_at: a delete asked for is in PostgreSQL before its job is queued

Revision ID: c2d4f6a8b0e1
Revises: b1c3e5a7d9f2
Create Date: 2026-11-28 07:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c2d4f6a8b0e1"
down_revision: str | None = "b1c3e5a7d9f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("apps", sa.Column("delete_requested_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # The older code follows a delete in the queue only: one pending then is not retried
    op.drop_column("apps", "delete_requested_at")
