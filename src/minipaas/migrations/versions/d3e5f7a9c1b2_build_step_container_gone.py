"""builds.step_container_id goes: a build's steps are the containers on its own network

The column held the id the build's output named, which a step could print too.

Revision ID: d3e5f7a9c1b2
Revises: c2d4f6a8b0e1
Create Date: 2026-11-28 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d3e5f7a9c1b2"
down_revision: str | None = "c2d4f6a8b0e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_column("builds", "step_container_id")


def downgrade() -> None:
    # Empty: the older code's recovery then leaves a dead builder's step to its build's end
    op.add_column("builds", sa.Column("step_container_id", sa.String(64), nullable=True))
