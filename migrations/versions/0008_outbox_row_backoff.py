"""Outbox rows that fail to publish back off one by one (`next_attempt_at`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWNERS = ("billing", "jobs")


def upgrade() -> None:
    for owner in OWNERS:
        op.add_column(
            f"{owner}_outbox",
            sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        )


def downgrade() -> None:
    for owner in OWNERS:
        op.drop_column(f"{owner}_outbox", "next_attempt_at")
