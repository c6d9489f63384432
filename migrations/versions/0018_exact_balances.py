"""Balances and the ledger in exact decimals: NUMERIC(19, 6) credits; an adopted database's
fractional balances are carried exactly.

The customer's `users.balance` is a double precision, so an adopted database may hold 12.5
credits; 0006 rounded such a balance into its `opening` entry, and `imagebot billing audit`
then flagged the account. Here the balance, the ledger's amounts and the gateway's copy of
balances become NUMERIC(19, 6): up to 10^13 credits to the millionth, which holds every
balance the customer's float can mean (PostgreSQL reads a double at its 15 significant
digits: 59.699999999999996 is 59.7) down to a millionth of a credit. A balance finer than that
is refused, loudly, before anything changes: nobody's money is rounded. Every account whose
opening entry was rounded gets its missing fraction as an `opening_fraction:<user_id>` entry
(never more than half a credit either way, and only where an opening entry exists: any other
drift stays for the audit to report).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREDITS = sa.Numeric(19, 6)
COLUMNS = (
    ("users", "balance"),
    ("billing_ledger", "amount"),
    ("billing_ledger", "balance_after"),
    ("gateway_credits", "balance"),
)


def upgrade() -> None:
    op.execute(
        """
        DO $$
        DECLARE finer text;
        BEGIN
            SELECT string_agg(user_id::text || ' (' || balance::text || ')', ', ')
              INTO finer
              FROM (SELECT user_id, balance FROM users
                     WHERE balance::numeric <> round(balance::numeric, 6)
                     ORDER BY user_id LIMIT 20) AS finer_balances;
            IF finer IS NOT NULL THEN
                RAISE EXCEPTION 'balances finer than a millionth of a credit: users %', finer
                    USING HINT = 'set them to the amount they stand for, then migrate again';
            END IF;
        END $$
        """
    )
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=CREDITS, postgresql_using=f"{column}::numeric(19, 6)")
    op.execute(
        "INSERT INTO billing_ledger (user_id, idempotency_key, kind, amount, balance_after, reason) "
        "SELECT u.user_id, 'opening_fraction:' || u.user_id, 'opening', "
        "u.balance - t.total, u.balance, "
        "'the fraction of the balance before the ledger existed that its opening entry rounded' "
        "FROM users u JOIN (SELECT user_id, sum(amount) AS total FROM billing_ledger "
        "GROUP BY user_id) t ON t.user_id = u.user_id "
        "WHERE u.balance <> t.total AND abs(u.balance - t.total) <= 0.5 "
        "AND EXISTS (SELECT 1 FROM billing_ledger o "
        "WHERE o.idempotency_key = 'opening:' || u.user_id)"
    )


def downgrade() -> None:
    op.execute("DELETE FROM billing_ledger WHERE idempotency_key = 'opening_fraction:' || user_id")
    op.alter_column(
        "gateway_credits", "balance", type_=sa.Integer(), postgresql_using="round(balance)::integer"
    )
    for column in ("balance_after", "amount"):
        op.alter_column(
            "billing_ledger",
            column,
            type_=sa.BigInteger(),
            postgresql_using=f"round({column})::bigint",
        )
    op.alter_column(
        "users", "balance", type_=sa.Float(), postgresql_using="balance::double precision"
    )
