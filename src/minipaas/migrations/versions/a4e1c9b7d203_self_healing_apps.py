"""self-healing apps: a crashed status and the restart backoff of each app

Revision ID: a4e1c9b7d203
Revises: 8c3d2f1a6e57
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a4e1c9b7d203"
down_revision: str | None = "8c3d2f1a6e57"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = ("created", "deploying", "running", "stopped", "failed")
NEW_STATUSES = (*OLD_STATUSES, "crashed")
# (table, column, CHECK constraint of its str_enum)
STATUS_COLUMNS = (
    ("apps", "status", "app_status"),
    ("deployments", "app_status_before", "deployment_app_status_before"),
)


def _allow_statuses(statuses: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{status}'" for status in statuses)
    for table, column, constraint in STATUS_COLUMNS:
        op.drop_constraint(constraint, table, type_="check")
        op.create_check_constraint(constraint, table, f"{column} IN ({listed})")


def upgrade() -> None:
    _allow_statuses(NEW_STATUSES)
    op.add_column(
        "apps",
        sa.Column("restart_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column(
        "apps",
        sa.Column("crash_streak", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("apps", sa.Column("last_exit_code", sa.Integer(), nullable=True))
    op.add_column("apps", sa.Column("last_restart_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("apps", sa.Column("next_restart_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for column in (
        "next_restart_at",
        "last_restart_at",
        "last_exit_code",
        "crash_streak",
        "restart_count",
    ):
        op.drop_column("apps", column)
    # A crashed app is shown failed by the older code (it has no healer)
    op.execute("UPDATE apps SET status = 'failed' WHERE status = 'crashed'")
    op.execute(
        "UPDATE deployments SET app_status_before = 'failed' WHERE app_status_before = 'crashed'"
    )
    _allow_statuses(OLD_STATUSES)
