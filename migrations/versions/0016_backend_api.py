"""The backend API's own tables: the operators' audit log, its outbox and inbox.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNER = "backend_api"


def upgrade() -> None:
    op.create_table(
        "backend_audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("operator", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("outcome", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("backend_audit_log_pkey")),
        sa.UniqueConstraint("request_id", name=op.f("backend_audit_log_request_id_key")),
    )
    op.create_index("ix_backend_audit_log_created_at", "backend_audit_log", ["created_at"])
    op.create_index(
        "ix_backend_audit_log_operator_created_at", "backend_audit_log", ["operator", "created_at"]
    )
    op.create_index("ix_backend_audit_log_target", "backend_audit_log", ["target"])
    op.create_table(
        f"{OWNER}_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("routing_key", sa.String(length=255), nullable=False),
        sa.Column("envelope", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f(f"{OWNER}_outbox_pkey")),
        sa.UniqueConstraint("seq", name=op.f(f"{OWNER}_outbox_seq_key")),
    )
    op.create_index(
        f"ix_{OWNER}_outbox_pending",
        f"{OWNER}_outbox",
        ["seq"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index(f"ix_{OWNER}_outbox_published_at", f"{OWNER}_outbox", ["published_at"])
    op.create_table(
        f"{OWNER}_inbox",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f(f"{OWNER}_inbox_pkey")),
    )
    op.create_index(f"ix_{OWNER}_inbox_received_at", f"{OWNER}_inbox", ["received_at"])


def downgrade() -> None:
    op.drop_table(f"{OWNER}_inbox")
    op.drop_table(f"{OWNER}_outbox")
    op.drop_table("backend_audit_log")
