"""releases and deployment snapshots

Revision ID: 49b6a1315c47
Revises: 935fa2450878
Create Date: 2026-11-27 06:42:08.074787
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "49b6a1315c47"
down_revision: str | None = "935fa2450878"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("image_id", sa.String(length=128), nullable=False),
        sa.Column("internal_port", sa.Integer(), nullable=False),
        sa.Column(
            "command",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("env_ciphertext", sa.Text(), nullable=True),
        sa.Column(
            "env_names",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("cpus", sa.Float(), nullable=False),
        sa.Column("pids", sa.Integer(), nullable=False),
        sa.Column(
            "pull_policy",
            sa.Enum(
                "if-not-present",
                "always",
                "never",
                name="release_pull_policy",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("app_id", "number", name="uq_releases_app_number"),
    )
    op.create_index(op.f("ix_releases_app_id"), "releases", ["app_id"], unique=False)
    op.add_column("deployments", sa.Column("env_ciphertext", sa.Text(), nullable=True))
    op.add_column(
        "deployments",
        sa.Column(
            "env_names",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )
    op.add_column("deployments", sa.Column("memory_mb", sa.Integer(), nullable=True))
    op.add_column("deployments", sa.Column("cpus", sa.Float(), nullable=True))
    op.add_column("deployments", sa.Column("pids", sa.Integer(), nullable=True))
    op.add_column(
        "deployments",
        sa.Column(
            "pull_policy",
            sa.Enum(
                "if-not-present",
                "always",
                "never",
                name="deployment_pull_policy",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=True,
        ),
    )
    op.add_column("deployments", sa.Column("pinned_image_id", sa.String(length=128), nullable=True))
    op.add_column("deployments", sa.Column("rollback_to_release", sa.Integer(), nullable=True))
    op.add_column("deployments", sa.Column("release_number", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "release_number")
    op.drop_column("deployments", "rollback_to_release")
    op.drop_column("deployments", "pinned_image_id")
    op.drop_column("deployments", "pull_policy")
    op.drop_column("deployments", "pids")
    op.drop_column("deployments", "cpus")
    op.drop_column("deployments", "memory_mb")
    op.drop_column("deployments", "env_names")
    op.drop_column("deployments", "env_ciphertext")
    op.drop_index(op.f("ix_releases_app_id"), table_name="releases")
    op.drop_table("releases")
