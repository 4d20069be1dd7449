"""builds from source: uploads, builds, their log lines

Revision ID: f2b4d6e8a0c1
Revises: f1a0c3e5b7d9
Create Date: 2026-11-27 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f2b4d6e8a0c1"
down_revision: str | None = "f1a0c3e5b7d9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUILD_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "app_id", sa.Integer(), sa.ForeignKey("apps.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column(
            "requested_by_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("upload_sha256", sa.String(64), nullable=False),
        sa.Column("upload_bytes", sa.BigInteger(), nullable=False),
        sa.Column("context_files", sa.Integer(), nullable=False),
        sa.Column("context_bytes", sa.BigInteger(), nullable=False),
        sa.Column("dockerfile", sa.String(255), nullable=False),
        sa.Column("build_args", postgresql.JSONB(), nullable=False),
        sa.Column("deploy_on_success", sa.Boolean(), nullable=False),
        sa.Column("image_tag", sa.String(255), nullable=True),
        sa.Column("image_id", sa.String(128), nullable=True),
        sa.Column(
            "deployment_id",
            sa.Integer(),
            sa.ForeignKey("deployments.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failed_step", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("step_container_id", sa.String(64), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.UniqueConstraint("app_id", "number", name="uq_builds_app_number"),
        sa.CheckConstraint(_in("status", BUILD_STATUSES), name="build_status"),
    )
    op.create_index("ix_builds_app_id", "builds", ["app_id"])
    # One build per app at a time, even under concurrent uploads
    op.create_index(
        "uq_builds_one_active_per_app",
        "builds",
        ["app_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_table(
        "build_log_lines",
        sa.Column(
            "build_id",
            sa.Integer(),
            sa.ForeignKey("builds.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("build_log_lines")
    op.drop_index("uq_builds_one_active_per_app", table_name="builds")
    op.drop_index("ix_builds_app_id", table_name="builds")
    op.drop_table("builds")
