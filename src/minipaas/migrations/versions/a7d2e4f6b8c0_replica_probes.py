"""replicas out of the route after failed probes (worker/prober.py)

Revision ID: a7d2e4f6b8c0
Revises: f3c5e7a9b1d2
Create Date: 2026-11-27 18:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7d2e4f6b8c0"
down_revision: str | None = "f3c5e7a9b1d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Replica 0 lives on the app's row, the others on theirs: both may be taken out
    for table in ("apps", "app_replicas"):
        op.add_column(
            table, sa.Column("unhealthy_since", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    # The older code knows no probes: every replica with a port is routed again
    for table in ("app_replicas", "apps"):
        op.drop_column(table, "unhealthy_since")
