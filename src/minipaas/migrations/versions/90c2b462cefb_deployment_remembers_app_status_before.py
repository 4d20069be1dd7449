"""deployment remembers app status before

Revision ID: 90c2b462cefb
Revises: 134728b1a05d
Create Date: 2026-11-27 06:31:21.905779
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "90c2b462cefb"
down_revision: str | None = "134728b1a05d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "deployments",
        sa.Column(
            "app_status_before",
            sa.Enum(
                "created",
                "deploying",
                "running",
                "stopped",
                "failed",
                name="deployment_app_status_before",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
        ),
    )


def downgrade() -> None:
    op.drop_column("deployments", "app_status_before")
