"""builds from source: uploads, builds, their log lines

Revision ID: f2b4d6e8a0c1
Revises: f1a0c3e5b7d9
Create Date: 2026-11-27 18:00:00.000000
"""

from collections.abc import Sequence

revision: str = "f2b4d6e8a0c1"
down_revision: str | None = "f1a0c3e5b7d9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Reserved in the chain; filled in by the change that needs it
    pass


def downgrade() -> None:
    pass
