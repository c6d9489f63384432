"""Outbox and inbox tables of billing and jobs (transactional outbox, idempotent inbox).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNERS = ("billing", "jobs")


def upgrade() -> None:
    for owner in OWNERS:
        op.create_table(
            f"{owner}_outbox",
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
            sa.PrimaryKeyConstraint("id", name=op.f(f"{owner}_outbox_pkey")),
            sa.UniqueConstraint("seq", name=op.f(f"{owner}_outbox_seq_key")),
        )
        op.create_index(
            f"ix_{owner}_outbox_pending",
            f"{owner}_outbox",
            ["seq"],
            postgresql_where=sa.text("published_at IS NULL"),
        )
        op.create_index(f"ix_{owner}_outbox_published_at", f"{owner}_outbox", ["published_at"])
        op.create_table(
            f"{owner}_inbox",
            sa.Column("event_id", sa.Uuid(), nullable=False),
            sa.Column("event_type", sa.String(length=100), nullable=False),
            sa.Column(
                "received_at",
                sa.DateTime(timezone=True),
                server_default=sa.text("now()"),
                nullable=False,
            ),
            sa.PrimaryKeyConstraint("event_id", name=op.f(f"{owner}_inbox_pkey")),
        )
        op.create_index(f"ix_{owner}_inbox_received_at", f"{owner}_inbox", ["received_at"])


def downgrade() -> None:
    for owner in OWNERS:
        op.drop_table(f"{owner}_inbox")
        op.drop_table(f"{owner}_outbox")
