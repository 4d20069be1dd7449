"""users, tokens, audit log; app owners, limits and encrypted env

Revision ID: 134728b1a05d
Revises: 027a5d534a97
Create Date: 2026-11-27 06:00:01.525788
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "134728b1a05d"
down_revision: str | None = "027a5d534a97"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=63), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "admin",
                "member",
                name="user_role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("disabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=63), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("outcome", sa.String(length=100), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])

    op.add_column("apps", sa.Column("owner_id", sa.Integer(), nullable=True))
    op.create_index("ix_apps_owner_id", "apps", ["owner_id"])
    op.create_foreign_key(
        "fk_apps_owner_id", "apps", "users", ["owner_id"], ["id"], ondelete="RESTRICT"
    )
    op.add_column("apps", sa.Column("env_ciphertext", sa.Text(), nullable=True))
    op.add_column(
        "apps", sa.Column("env_names", JSONB, server_default=sa.text("'[]'"), nullable=False)
    )
    # Existing apps get the default limits of this release
    op.add_column(
        "apps", sa.Column("memory_mb", sa.Integer(), server_default="256", nullable=False)
    )
    op.add_column("apps", sa.Column("cpus", sa.Float(), server_default="0.5", nullable=False))
    op.add_column("apps", sa.Column("pids", sa.Integer(), server_default="256", nullable=False))
    for column in ("env_names", "memory_mb", "cpus", "pids"):
        op.alter_column("apps", column, server_default=None)
    op.create_check_constraint("ck_apps_memory_mb", "apps", "memory_mb > 0")
    op.create_check_constraint("ck_apps_cpus", "apps", "cpus > 0")
    op.create_check_constraint("ck_apps_pids", "apps", "pids > 0")

    # Env values move from clear JSON to ciphertext
    from minipaas.security import encrypt_env

    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, env FROM apps")).all()
    for app_id, env in rows:
        env = env or {}
        connection.execute(
            sa.text("UPDATE apps SET env_ciphertext = :c, env_names = :n WHERE id = :id"),
            {"c": encrypt_env(env), "n": json.dumps(sorted(env)), "id": app_id},
        )
    op.drop_column("apps", "env")


def downgrade() -> None:
    from minipaas.security import decrypt_env

    op.add_column(
        "apps",
        sa.Column(
            "env", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
    )
    op.alter_column("apps", "env", server_default=None)
    connection = op.get_bind()
    for app_id, ciphertext in connection.execute(
        sa.text("SELECT id, env_ciphertext FROM apps")
    ).all():
        connection.execute(
            sa.text("UPDATE apps SET env = :e WHERE id = :id"),
            {"e": json.dumps(decrypt_env(ciphertext)), "id": app_id},
        )
    for name in ("ck_apps_pids", "ck_apps_cpus", "ck_apps_memory_mb"):
        op.drop_constraint(name, "apps", type_="check")
    op.drop_constraint("fk_apps_owner_id", "apps", type_="foreignkey")
    op.drop_index("ix_apps_owner_id", table_name="apps")
    for column in ("pids", "cpus", "memory_mb", "env_names", "env_ciphertext", "owner_id"):
        op.drop_column("apps", column)
    op.drop_index("ix_audit_events_created_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_api_tokens_user_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
