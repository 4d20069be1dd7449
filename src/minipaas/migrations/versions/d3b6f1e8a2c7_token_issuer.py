"""tokens remember who issued them (they die with their issuer's authority)

Revision ID: d3b6f1e8a2c7
Revises: c5f8a2d1e934
Create Date: 2026-11-28 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d3b6f1e8a2c7"
down_revision: str | None = "c5f8a2d1e934"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: issued by the platform itself (bootstrap, the admin CLI) or before this column
    op.add_column(
        "api_tokens",
        sa.Column(
            "issued_by_id",
            sa.Integer(),
            sa.ForeignKey("users.id", name="api_tokens_issued_by_id_fkey", ondelete="CASCADE"),
            nullable=True,
        ),
    )
    # Disabling an admin revokes what they issued: find those rows without a scan
    op.create_index("ix_api_tokens_issued_by_id", "api_tokens", ["issued_by_id"])


def downgrade() -> None:
    op.drop_index("ix_api_tokens_issued_by_id", table_name="api_tokens")
    op.drop_column("api_tokens", "issued_by_id")
