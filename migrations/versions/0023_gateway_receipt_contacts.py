"""The gateway's receipt contacts: the email or phone each user gave for their 54-FZ receipts.

`gateway_receipt_contacts`: one row per Telegram user who gave one (asked only while billing
sends receipts), changed in place, deleted by /deletemydata.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_receipt_contacts",
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("contact", sa.String(254), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("telegram_id", name=op.f("pk_gateway_receipt_contacts")),
    )


def downgrade() -> None:
    op.drop_table("gateway_receipt_contacts")
