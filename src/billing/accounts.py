"""Accounts and the ledger in SQL: every balance change is one conditional statement.

Repositories never commit; the caller's unit of work does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from billing.domain import LedgerKind
from contracts.envelope import RawEnvelope

# One round trip: the balance moves only if it stays >= 0 and the key was never applied, and
# the ledger row is written from the very row the UPDATE returned. Two transactions racing on
# one key: the loser's INSERT hits the unique key and its whole transaction rolls back.
_MOVE = text(
    """
    WITH moved AS (
        UPDATE users SET balance = balance + :amount
        WHERE user_id = :user_id AND balance + :amount >= 0
          AND NOT EXISTS (SELECT 1 FROM billing_ledger WHERE idempotency_key = :key)
        RETURNING user_id, balance, telegram_id
    ), entry AS (
        INSERT INTO billing_ledger
            (user_id, idempotency_key, kind, amount, balance_after, job_id, payment_id, reason)
        SELECT user_id, :key, :kind, :amount, balance::bigint, :job_id, :payment_id, :reason
        FROM moved
        RETURNING balance_after
    )
    SELECT entry.balance_after, moved.telegram_id FROM entry, moved
    """
)

# The common debit in one autocommitted statement (one round trip, no BEGIN/COMMIT): the
# conditional debit, its ledger row, the inbox mark and the BalanceDebited outbox row, whose
# envelope gets the balance the UPDATE returned. It does nothing at all unless the debit
# applies; every other outcome (duplicate, refusal, closed job) takes the general path.
_DEBIT_AT_ONCE = text(
    """
    WITH moved AS (
        UPDATE users SET balance = balance - :price
        WHERE user_id = :user_id AND balance >= :price
          AND NOT EXISTS (SELECT 1 FROM billing_ledger WHERE idempotency_key = :key)
          AND NOT EXISTS (SELECT 1 FROM billing_inbox WHERE event_id = :event_id)
        RETURNING user_id, balance
    ), entry AS (
        INSERT INTO billing_ledger (user_id, idempotency_key, kind, amount, balance_after, job_id)
        SELECT user_id, :key, 'debit', -CAST(:price AS bigint), balance::bigint, :job_id
        FROM moved
        RETURNING balance_after
    ), claimed AS (
        INSERT INTO billing_inbox (event_id, event_type)
        SELECT CAST(:event_id AS uuid), :event_type FROM moved
    ), sent AS (
        INSERT INTO billing_outbox (id, routing_key, envelope)
        SELECT CAST(:outbox_id AS uuid), :routing_key,
               jsonb_set(CAST(:envelope AS jsonb), '{data,balance}', to_jsonb(balance_after))
        FROM entry
    )
    SELECT balance_after FROM entry
    """
)

_ENSURE = text(
    """
    INSERT INTO users (telegram_id, username, balance) VALUES (:telegram_id, :username, 0)
    ON CONFLICT (telegram_id) DO UPDATE SET username = EXCLUDED.username
    RETURNING user_id, balance, (xmax = 0) AS created
    """
)


@dataclass(frozen=True)
class Moved:
    balance: int
    telegram_id: int | None


@dataclass(frozen=True)
class AccountState:
    exists: bool
    balance: int
    telegram_id: int | None


@dataclass(frozen=True)
class OpenedAccount:
    user_id: int
    balance: int
    created: bool


@dataclass(frozen=True)
class Drift:
    user_id: int
    telegram_id: int | None
    balance: float | None
    ledger_sum: int


async def move(
    session: AsyncSession,
    *,
    user_id: int,
    amount: int,
    key: str,
    kind: LedgerKind,
    job_id: int | None = None,
    payment_id: int | None = None,
    reason: str | None = None,
) -> Moved | None:
    """Add `amount` (signed) to the balance once per `key`; None when refused or already done."""
    connection = await session.connection()  # Core: the ORM adds nothing to one statement
    row = (
        await connection.execute(
            _MOVE,
            {
                "user_id": user_id,
                "amount": amount,
                "key": key,
                "kind": kind.value,
                "job_id": job_id,
                "payment_id": payment_id,
                "reason": reason,
            },
        )
    ).first()
    return None if row is None else Moved(balance=int(row[0]), telegram_id=row[1])


async def state(session: AsyncSession, user_id: int) -> AccountState:
    row = (
        await session.execute(
            text("SELECT balance, telegram_id FROM users WHERE user_id = :u"), {"u": user_id}
        )
    ).first()
    if row is None:
        return AccountState(exists=False, balance=0, telegram_id=None)
    return AccountState(exists=True, balance=int(row[0] or 0), telegram_id=row[1])


async def entry_amount(session: AsyncSession, key: str) -> tuple[int, int] | None:
    """(user_id, amount) of the ledger entry under `key`, if any."""
    row = (
        await session.execute(
            text("SELECT user_id, amount FROM billing_ledger WHERE idempotency_key = :k"),
            {"k": key},
        )
    ).first()
    return None if row is None else (int(row[0]), int(row[1]))


async def applied(session: AsyncSession, key: str) -> bool:
    return await entry_amount(session, key) is not None


async def ensure(session: AsyncSession, telegram_id: int, username: str | None) -> OpenedAccount:
    """Open the account (balance 0) or refresh its username; the caller grants welcome credits."""
    row = (await session.execute(_ENSURE, {"telegram_id": telegram_id, "username": username})).one()
    return OpenedAccount(user_id=int(row[0]), balance=int(row[1] or 0), created=bool(row[2]))


async def user_id_of(session: AsyncSession, telegram_id: int) -> int | None:
    return (
        await session.execute(
            text("SELECT user_id FROM users WHERE telegram_id = :t"), {"t": telegram_id}
        )
    ).scalar_one_or_none()


async def drifts(session: AsyncSession) -> list[Drift]:
    """Every account whose balance differs from its ledger sum."""
    rows = await session.execute(
        text(
            """
            SELECT u.user_id, u.telegram_id, u.balance, COALESCE(l.total, 0)
            FROM users u
            LEFT JOIN (SELECT user_id, sum(amount) AS total FROM billing_ledger GROUP BY user_id) l
              ON l.user_id = u.user_id
            WHERE u.balance IS DISTINCT FROM COALESCE(l.total, 0)::double precision
            ORDER BY u.user_id
            """
        )
    )
    return [Drift(int(r[0]), r[1], r[2], int(r[3])) for r in rows]


async def count_accounts(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM users"))).scalar_one())


async def debit_at_once(
    connection: AsyncConnection,
    *,
    user_id: int,
    price: int,
    key: str,
    job_id: int,
    event_id: uuid.UUID,
    event_type: str,
    debited: RawEnvelope,
    routing_key: str,
) -> int | None:
    """The debit, its ledger row, inbox mark and outbox row at once; the balance, or None."""
    return (
        await connection.execute(
            _DEBIT_AT_ONCE,
            {
                "user_id": user_id,
                "price": price,
                "key": key,
                "job_id": job_id,
                "event_id": event_id,
                "event_type": event_type,
                "outbox_id": debited.id,
                "routing_key": routing_key,
                "envelope": debited.model_dump_json(),
            },
        )
    ).scalar_one_or_none()
