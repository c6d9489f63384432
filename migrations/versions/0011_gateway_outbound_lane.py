"""The sender's lanes: a message carries its lane, and the claim takes lower lanes first.

Replies to a user's own action are sent by the handler at once (lane 0, never in this table);
job status edits, results and notifications are lane 1 (the default, which is also what a
previous release's gateway writes during a rolling upgrade); broadcasts and other bulk sends
are lane 2. The claim walks the unsent rows by (lane, id), so a running broadcast never holds
up a result: the partial index of 0010 becomes one on (lane, id).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "gateway_outbound",
        sa.Column("lane", sa.SmallInteger(), nullable=False, server_default="1"),
    )
    op.create_index(
        "ix_gateway_outbound_pending_lane",
        "gateway_outbound",
        ["lane", "id"],
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.drop_index("ix_gateway_outbound_pending_id", table_name="gateway_outbound")


def downgrade() -> None:
    op.create_index(
        "ix_gateway_outbound_pending_id",
        "gateway_outbound",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.drop_index("ix_gateway_outbound_pending_lane", table_name="gateway_outbound")
    op.drop_column("gateway_outbound", "lane")
