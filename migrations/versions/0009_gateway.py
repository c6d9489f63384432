"""The bot gateway's tables: users, jobs, credits it announced, outbound Telegram messages,
FSM conversations, and its outbox and inbox.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bot_gateway_inbox",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("bot_gateway_inbox_pkey")),
    )
    op.create_index(
        "ix_bot_gateway_inbox_received_at", "bot_gateway_inbox", ["received_at"], unique=False
    )
    op.create_table(
        "bot_gateway_outbox",
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
        sa.PrimaryKeyConstraint("id", name=op.f("bot_gateway_outbox_pkey")),
        sa.UniqueConstraint("seq", name=op.f("bot_gateway_outbox_seq_key")),
    )
    op.create_index(
        "ix_bot_gateway_outbox_pending",
        "bot_gateway_outbox",
        ["seq"],
        unique=False,
        postgresql_where="published_at IS NULL",
    )
    op.create_index(
        "ix_bot_gateway_outbox_published_at", "bot_gateway_outbox", ["published_at"], unique=False
    )
    op.create_table(
        "gateway_credits",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("balance", sa.Integer(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("gateway_credits_pkey")),
    )
    op.create_index(
        op.f("ix_gateway_credits_telegram_id"), "gateway_credits", ["telegram_id"], unique=False
    )
    op.create_table(
        "gateway_fsm",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("state", sa.String(length=200), nullable=True),
        sa.Column(
            "data",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("gateway_fsm_pkey")),
    )
    op.create_table(
        "gateway_jobs",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("language", sa.String(length=10), nullable=False),
        sa.Column("preset_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("image_key", sa.String(length=255), nullable=True),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("price", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("step", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total_steps", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status_message_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("gateway_jobs_pkey")),
        sa.UniqueConstraint("job_id", name=op.f("gateway_jobs_job_id_key")),
    )
    op.create_index(
        "ix_gateway_jobs_telegram_id_phase", "gateway_jobs", ["telegram_id", "phase"], unique=False
    )
    op.create_table(
        "gateway_outbound",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "not_before",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("gateway_outbound_pkey")),
        sa.UniqueConstraint("key", name=op.f("gateway_outbound_key_key")),
    )
    op.create_index(
        "ix_gateway_outbound_pending",
        "gateway_outbound",
        ["not_before"],
        unique=False,
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "gateway_users",
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("language", sa.String(length=10), server_default="ru", nullable=False),
        sa.Column("username", sa.String(length=100), nullable=True),
        sa.Column("blocked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("telegram_id", name=op.f("gateway_users_pkey")),
    )
    op.create_index(op.f("ix_gateway_users_user_id"), "gateway_users", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_gateway_users_user_id"), table_name="gateway_users")
    op.drop_table("gateway_users")
    op.drop_index(
        "ix_gateway_outbound_pending",
        table_name="gateway_outbound",
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.drop_table("gateway_outbound")
    op.drop_index("ix_gateway_jobs_telegram_id_phase", table_name="gateway_jobs")
    op.drop_table("gateway_jobs")
    op.drop_table("gateway_fsm")
    op.drop_index(op.f("ix_gateway_credits_telegram_id"), table_name="gateway_credits")
    op.drop_table("gateway_credits")
    op.drop_index("ix_bot_gateway_outbox_published_at", table_name="bot_gateway_outbox")
    op.drop_index(
        "ix_bot_gateway_outbox_pending",
        table_name="bot_gateway_outbox",
        postgresql_where="published_at IS NULL",
    )
    op.drop_table("bot_gateway_outbox")
    op.drop_index("ix_bot_gateway_inbox_received_at", table_name="bot_gateway_inbox")
    op.drop_table("bot_gateway_inbox")
