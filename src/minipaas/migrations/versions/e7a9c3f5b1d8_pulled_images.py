"""the images the platform pulled: the only ones (with its builds) it may garbage-collect

Revision ID: e7a9c3f5b1d8
Revises: d3b6f1e8a2c7
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7a9c3f5b1d8"
down_revision: str | None = "d3b6f1e8a2c7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Starts empty: images pulled before this revision are never collected (the safe side)
    op.create_table(
        "pulled_images",
        sa.Column("image_id", sa.String(length=128), primary_key=True),
        sa.Column("reference", sa.String(length=512), nullable=False),
        sa.Column(
            "pulled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_table("pulled_images")
