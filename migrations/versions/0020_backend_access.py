"""The backend API's operator accounts (TOTP), server-side sessions, and approvals on the audit log.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backend_operators",
        sa.Column("login", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("totp_secret", sa.String(length=64), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "role IN ('viewer', 'support', 'admin')", name=op.f("ck_backend_operators_role")
        ),
        sa.PrimaryKeyConstraint("login", name=op.f("backend_operators_pkey")),
    )
    op.create_table(
        "backend_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("operator", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["operator"],
            ["backend_operators.login"],
            name=op.f("backend_sessions_operator_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("backend_sessions_pkey")),
        sa.UniqueConstraint("token_hash", name=op.f("backend_sessions_token_hash_key")),
    )
    op.create_index(
        "ix_backend_sessions_operator_created_at", "backend_sessions", ["operator", "created_at"]
    )
    op.create_index("ix_backend_sessions_created_at", "backend_sessions", ["created_at"])
    op.add_column(
        "backend_audit_log",
        sa.Column("command", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column("backend_audit_log", sa.Column("approver", sa.String(length=100), nullable=True))
    op.create_index(
        "ix_backend_audit_log_awaiting",
        "backend_audit_log",
        ["id"],
        postgresql_where=sa.text("status = 'awaiting_approval'"),
    )


def downgrade() -> None:
    op.drop_index("ix_backend_audit_log_awaiting", table_name="backend_audit_log")
    op.drop_column("backend_audit_log", "approver")
    op.drop_column("backend_audit_log", "command")
    op.drop_table("backend_sessions")
    op.drop_table("backend_operators")
