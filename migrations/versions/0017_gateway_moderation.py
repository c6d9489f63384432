"""The gateway's moderation: an audit log of every decision, and users' restrictions.

`gateway_moderation_log`: every refusal (prompt, photo, result) with its verdict and scores,
and every restriction (suspended, banned, unbanned) with who decided and why; indexed by user
and time (refusals are counted over a window); a refused result's `job_id` is unique, so a
JobFailed delivered twice is logged once. `gateway_restrictions`: a ban with its
reason and operator, or a suspension's end, per Telegram user.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_moderation_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64), server_default="", nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("actor", sa.String(100), server_default="moderation", nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("gateway_moderation_log_pkey")),
    )
    op.create_index(
        "ix_gateway_moderation_log_telegram_id_created_at",
        "gateway_moderation_log",
        ["telegram_id", "created_at"],
    )
    op.create_index(
        "ix_gateway_moderation_log_job_id", "gateway_moderation_log", ["job_id"], unique=True
    )
    op.create_table(
        "gateway_restrictions",
        sa.Column("telegram_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("banned_reason", sa.Text(), nullable=True),
        sa.Column("banned_by", sa.String(100), nullable=True),
        sa.Column("suspended_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("telegram_id", name=op.f("gateway_restrictions_pkey")),
    )


def downgrade() -> None:
    op.drop_table("gateway_restrictions")
    op.drop_index("ix_gateway_moderation_log_job_id", table_name="gateway_moderation_log")
    op.drop_index(
        "ix_gateway_moderation_log_telegram_id_created_at", table_name="gateway_moderation_log"
    )
    op.drop_table("gateway_moderation_log")
