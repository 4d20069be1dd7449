"""HTTPS: certificates, ACME state, per-app redirect

Revision ID: f3c5e7a9b1d2
Revises: f2b4d6e8a0c1
Create Date: 2026-11-27 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3c5e7a9b1d2"
down_revision: str | None = "f2b4d6e8a0c1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "apps",
        sa.Column("https_redirect", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "apps", sa.Column("hsts_max_age", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.create_check_constraint(
        "ck_apps_hsts_max_age", "apps", "hsts_max_age BETWEEN 0 AND 63072000"
    )
    op.create_table(
        "acme_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("directory_url", sa.String(length=500), nullable=False),
        sa.Column("key_ciphertext", sa.Text(), nullable=False),
        sa.Column("registration", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("directory_url", name="uq_acme_accounts_directory_url"),
    )
    op.create_table(
        "tls_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("order_url", sa.Text(), nullable=True),
        sa.Column("cert_pem", sa.Text(), nullable=True),
        sa.Column("key_ciphertext", sa.Text(), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hostname", name="uq_tls_certificates_hostname"),
        sa.CheckConstraint(
            "status IN ('pending', 'issued', 'failed')", name="ck_tls_certificates_status"
        ),
    )


def downgrade() -> None:
    op.drop_table("tls_certificates")
    op.drop_table("acme_accounts")
    op.drop_constraint("ck_apps_hsts_max_age", "apps", type_="check")
    op.drop_column("apps", "hsts_max_age")
    op.drop_column("apps", "https_redirect")
