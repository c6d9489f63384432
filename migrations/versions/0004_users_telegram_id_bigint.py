"""Widen `users.telegram_id` to BIGINT: Telegram ids exceed 32 bits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "users", "telegram_id", existing_type=sa.Integer(), type_=sa.BigInteger(), nullable=True
    )


def downgrade() -> None:
    # Fails loudly if an id no longer fits 32 bits, rather than truncating it.
    op.alter_column(
        "users", "telegram_id", existing_type=sa.BigInteger(), type_=sa.Integer(), nullable=True
    )
