"""replicas per app

Revision ID: f1a0c3e5b7d9
Revises: e7a9c3f5b1d8
Create Date: 2026-11-27 18:00:00.000000
"""

from collections.abc import Sequence

revision: str = "f1a0c3e5b7d9"
down_revision: str | None = "e7a9c3f5b1d8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Reserved in the chain; filled in by the change that needs it
    pass


def downgrade() -> None:
    pass
