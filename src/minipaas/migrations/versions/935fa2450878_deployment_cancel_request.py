"""deployment cancel request

Revision ID: 935fa2450878
Revises: e921139d0b75
Create Date: 2026-11-27 06:40:28.998246
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "935fa2450878"
down_revision: str | None = "e921139d0b75"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "deployments", sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("deployments", "cancel_requested_at")
