"""node addresses of replicas (issue 14): where a replica's published port answers

Revision ID: b1c3e5a7d9f2
Revises: a7d2e4f6b8c0
Create Date: 2026-11-27 21:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b1c3e5a7d9f2"
down_revision: str | None = "a7d2e4f6b8c0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL is the host's loopback, where every replica ran until now: no data to migrate
    # deployments: its first replica's, for pointing back at it after an interrupted deploy
    for table in ("apps", "app_replicas", "deployments"):
        op.add_column(table, sa.Column("published_address", sa.String(255), nullable=True))


def downgrade() -> None:
    # The older code proxies to 127.0.0.1 only: replicas on other nodes become unreachable
    for table in ("deployments", "app_replicas", "apps"):
        op.drop_column(table, "published_address")
