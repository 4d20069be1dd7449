"""app status detail

Revision ID: e921139d0b75
Revises: 90c2b462cefb
Create Date: 2026-11-27 06:35:49.731110
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e921139d0b75"
down_revision: str | None = "90c2b462cefb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("apps", sa.Column("status_detail", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("apps", "status_detail")
