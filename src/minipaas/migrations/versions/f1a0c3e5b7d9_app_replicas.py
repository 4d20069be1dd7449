"""replicas per app: the count, the containers beside the first, and the scale action

Revision ID: f1a0c3e5b7d9
Revises: e7a9c3f5b1d8
Create Date: 2026-11-27 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f1a0c3e5b7d9"
down_revision: str | None = "e7a9c3f5b1d8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ACTIONS = ("stop", "start", "restart", "remove")
NEW_ACTIONS = (*OLD_ACTIONS, "scale")


def _allow_actions(actions: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{action}'" for action in actions)
    op.drop_constraint("app_action_kind", "app_actions", type_="check")
    op.create_check_constraint("app_action_kind", "app_actions", f"action IN ({listed})")


def upgrade() -> None:
    op.add_column(
        "apps", sa.Column("replicas", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.create_check_constraint("ck_apps_replicas", "apps", "replicas > 0")
    op.create_table(
        "app_replicas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("replica", sa.Integer(), nullable=False),
        sa.Column("container_id", sa.String(length=64), nullable=False),
        sa.Column("container_name", sa.String(length=255), nullable=False),
        sa.Column("published_port", sa.Integer(), nullable=True),
        sa.Column("crash_streak", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("restart_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_restart_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_restart_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app_id", "replica", name="uq_app_replicas_app_replica"),
        sa.CheckConstraint("replica > 0", name="ck_app_replicas_replica"),
    )
    op.create_index("ix_app_replicas_app_id", "app_replicas", ["app_id"])
    _allow_actions(NEW_ACTIONS)


def downgrade() -> None:
    # The older code knows no scale action: a pending one is ended, finished ones go
    op.execute("DELETE FROM app_actions WHERE action = 'scale'")
    _allow_actions(OLD_ACTIONS)
    op.drop_index("ix_app_replicas_app_id", table_name="app_replicas")
    # Containers of replicas past the first are left to the reconciler (nothing owns them)
    op.drop_table("app_replicas")
    op.drop_constraint("ck_apps_replicas", "apps", type_="check")
    op.drop_column("apps", "replicas")
