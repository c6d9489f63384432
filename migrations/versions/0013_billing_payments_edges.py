"""Billing: what a payment keeps beyond the customer's columns, for refunds and receipts.

`income_amount` (kopecks): what reached the shop after YooKassa's fee. `refund_of`: a refund's
`payments` row names the top-up it gives money back for (several partial refunds may; an
index, no foreign key: the customer's schema keeps exactly its own). A
refund's `credits` are the credits it takes back; `receipt_contact`: the buyer's email or
phone a 54-FZ receipt went to, so a refund's receipt goes to the same one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payments", sa.Column("income_amount", sa.Integer(), nullable=True))
    op.add_column("payments", sa.Column("refund_of", sa.Integer(), nullable=True))
    op.add_column("payments", sa.Column("receipt_contact", sa.String(length=320), nullable=True))
    op.create_index(op.f("ix_payments_refund_of"), "payments", ["refund_of"])


def downgrade() -> None:
    op.drop_index(op.f("ix_payments_refund_of"), table_name="payments")
    op.drop_column("payments", "receipt_contact")
    op.drop_column("payments", "refund_of")
    op.drop_column("payments", "income_amount")
