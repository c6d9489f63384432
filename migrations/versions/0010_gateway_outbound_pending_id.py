"""The sender claims due messages in id order among the unsent ones only.

Its claim walked the primary key (every message ever sent, and their dead versions) and
compared each unsent row with every leased one; under load that was the database's most
expensive statement. A partial index on `id` of the unsent rows keeps the walk to them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_gateway_outbound_pending_id",
        "gateway_outbound",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_gateway_outbound_pending_id", table_name="gateway_outbound")
