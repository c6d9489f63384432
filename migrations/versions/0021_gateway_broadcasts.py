"""The gateway's broadcasts: operators' broadcasts (through the backend API) with their text,
audience, recipients and cancellation; a partial index over the broadcast rows of
gateway_outbound (keyed `broadcast:<id>:<chat>`) so a broadcast's progress is read by key
prefix; indexes on gateway_users.created_at and gateway_jobs.created_at for the dashboard's new and
active users.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_broadcasts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("operator", sa.String(100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("audience", postgresql.JSONB(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Integer(), server_default="0", nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("canceled_by", sa.String(100), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("gateway_broadcasts_pkey")),
    )
    op.create_index(op.f("ix_gateway_broadcasts_created_at"), "gateway_broadcasts", ["created_at"])
    op.create_index(
        "ix_gateway_outbound_broadcast_key",
        "gateway_outbound",
        ["key"],
        postgresql_ops={"key": "text_pattern_ops"},
        postgresql_where=sa.text("key LIKE 'broadcast:%'"),
    )
    op.create_index("ix_gateway_jobs_created_at", "gateway_jobs", ["created_at"])
    op.create_index("ix_gateway_users_created_at", "gateway_users", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_gateway_users_created_at", table_name="gateway_users")
    op.drop_index("ix_gateway_jobs_created_at", table_name="gateway_jobs")
    op.drop_index("ix_gateway_outbound_broadcast_key", table_name="gateway_outbound")
    op.drop_index(op.f("ix_gateway_broadcasts_created_at"), table_name="gateway_broadcasts")
    op.drop_table("gateway_broadcasts")
