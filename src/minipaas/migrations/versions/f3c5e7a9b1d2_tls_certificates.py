"""HTTPS: certificates, ACME state, per-app redirect

Revision ID: f3c5e7a9b1d2
Revises: f2b4d6e8a0c1
Create Date: 2026-11-27 18:00:00.000000
"""

from collections.abc import Sequence

revision: str = "f3c5e7a9b1d2"
down_revision: str | None = "f2b4d6e8a0c1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Reserved in the chain; filled in by the change that needs it
    pass


def downgrade() -> None:
    pass
