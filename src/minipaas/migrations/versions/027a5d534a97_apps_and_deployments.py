"""apps and deployments

Revision ID: 027a5d534a97
Revises:
Create Date: 2026-11-27 05:30:43.525286
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "027a5d534a97"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("internal_port", sa.Integer(), nullable=False),
        sa.Column(
            "env",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "command",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "pull_policy",
            sa.Enum(
                "if-not-present",
                "always",
                "never",
                name="pull_policy",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "created",
                "deploying",
                "running",
                "stopped",
                "failed",
                name="app_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("container_id", sa.String(length=64), nullable=True),
        sa.Column("container_name", sa.String(length=255), nullable=True),
        sa.Column("published_port", sa.Integer(), nullable=True),
        sa.Column("current_deployment_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("internal_port BETWEEN 1 AND 65535", name="ck_apps_internal_port"),
        sa.CheckConstraint(
            "published_port IS NULL OR published_port BETWEEN 1 AND 65535",
            name="ck_apps_published_port",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_apps_name"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                name="deployment_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("image_id", sa.String(length=128), nullable=True),
        sa.Column("internal_port", sa.Integer(), nullable=False),
        sa.Column(
            "command",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("container_id", sa.String(length=64), nullable=True),
        sa.Column("container_name", sa.String(length=255), nullable=True),
        sa.Column("published_port", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deployments_app_id_id", "deployments", ["app_id", "id"], unique=False)
    op.create_index(
        "uq_deployments_one_active_per_app",
        "deployments",
        ["app_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_foreign_key(
        "fk_apps_current_deployment_id",
        "apps",
        "deployments",
        ["current_deployment_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint("fk_apps_current_deployment_id", "apps", type_="foreignkey")
    op.drop_index(
        "uq_deployments_one_active_per_app",
        table_name="deployments",
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )
    op.drop_index("ix_deployments_app_id_id", table_name="deployments")
    op.drop_table("deployments")
    op.drop_table("apps")
