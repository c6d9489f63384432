"""Billing: the ledger, a non-negative balance, idempotent top-ups.

Existing accounts get an `opening:<user_id>` ledger entry holding their balance, so the balance
equals the ledger sum from the start (a fractional legacy balance is rounded in the entry and
then shows up in `imagebot billing audit`). The CHECK fails loudly on a negative legacy balance
rather than changing anyone's money.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_ledger",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("billing_ledger_user_id_fkey")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("billing_ledger_pkey")),
        sa.UniqueConstraint("idempotency_key", name=op.f("billing_ledger_idempotency_key_key")),
    )
    op.create_index(op.f("ix_billing_ledger_user_id"), "billing_ledger", ["user_id"])
    op.execute(
        "INSERT INTO billing_ledger (user_id, idempotency_key, kind, amount, balance_after, reason) "
        "SELECT user_id, 'opening:' || user_id, 'opening', round(balance)::bigint, "
        "round(balance)::bigint, 'balance before the ledger existed' "
        "FROM users WHERE balance IS NOT NULL AND balance <> 0"
    )
    op.create_check_constraint(op.f("ck_users_balance_non_negative"), "users", "balance >= 0")
    op.add_column("payments", sa.Column("request_id", sa.Uuid(), nullable=True))
    op.add_column("payments", sa.Column("credits", sa.Integer(), nullable=True))
    op.create_unique_constraint(op.f("payments_request_id_key"), "payments", ["request_id"])


def downgrade() -> None:
    op.drop_constraint(op.f("payments_request_id_key"), "payments", type_="unique")
    op.drop_column("payments", "credits")
    op.drop_column("payments", "request_id")
    op.drop_constraint(op.f("ck_users_balance_non_negative"), "users", type_="check")
    op.drop_table("billing_ledger")
