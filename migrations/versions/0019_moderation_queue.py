"""The gateway's moderation queue (held inputs awaiting an operator) and upload fingerprints
(identical uploads across accounts); billing's shared-upload flags.

`gateway_moderation_queue`: a request whose photo scored between the hold and the refuse
thresholds, kept (what the user asked for, at the price they were shown) until an operator
approves or rejects it; one per request id. `gateway_upload_fingerprints`: the SHA-256 of each
upload's decoded pixels per account (identical uploads from many accounts are a farming signal).
`billing_farming_flags`: accounts billing was told share uploads with many others (their weekly
bonus waits for a payment).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_moderation_queue",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), server_default="held", nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("language", sa.String(10), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("price", sa.Integer(), nullable=False),
        sa.Column("preset_id", sa.Integer(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("image_keys", postgresql.ARRAY(sa.String(255)), nullable=False),
        sa.Column("status_message_id", sa.BigInteger(), nullable=False),
        sa.Column("category", sa.String(64), server_default="", nullable=False),
        sa.Column(
            "scores",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("decided_by", sa.String(100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("gateway_moderation_queue_pkey")),
        sa.UniqueConstraint("request_id", name=op.f("gateway_moderation_queue_request_id_key")),
    )
    op.create_index(
        "ix_gateway_moderation_queue_state_id", "gateway_moderation_queue", ["state", "id"]
    )
    op.create_index(
        "ix_gateway_moderation_queue_telegram_id", "gateway_moderation_queue", ["telegram_id"]
    )
    op.create_table(
        "gateway_upload_fingerprints",
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "first_seen", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint(
            "digest", "telegram_id", name=op.f("gateway_upload_fingerprints_pkey")
        ),
    )
    op.create_index(
        "ix_gateway_upload_fingerprints_telegram_id",
        "gateway_upload_fingerprints",
        ["telegram_id"],
    )
    op.create_table(
        "billing_farming_flags",
        sa.Column("telegram_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("shared_upload_accounts", sa.Integer(), nullable=False),
        sa.Column(
            "flagged_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("telegram_id", name=op.f("billing_farming_flags_pkey")),
    )


def downgrade() -> None:
    op.drop_table("billing_farming_flags")
    op.drop_index(
        "ix_gateway_upload_fingerprints_telegram_id", table_name="gateway_upload_fingerprints"
    )
    op.drop_table("gateway_upload_fingerprints")
    op.drop_index("ix_gateway_moderation_queue_telegram_id", table_name="gateway_moderation_queue")
    op.drop_index("ix_gateway_moderation_queue_state_id", table_name="gateway_moderation_queue")
    op.drop_table("gateway_moderation_queue")
