"""Accounts and the ledger as SQLAlchemy Core: every balance change is one guarded statement.

The statements are built here and run by the caller's unit of work: `apply` (the change, the
message's mark and its events as one statement, committed on its own) or, inside a
transaction, `uow.execute`. The database enforces what money must never do: the balance moves
only while it stays >= 0 (and `CHECK (balance >= 0)`), and a ledger key is applied at most once
(its unique index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Row,
    Select,
    String,
    Table,
    Text,
    column,
    exists,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.selectable import CTE

from billing.domain import WELCOME_KEY_PREFIX, LedgerKind
from billing.models import LedgerEntry, Payment, PaymentStatus, PaymentType, User
from messaging.unit_of_work import Change, UnitOfWork

USERS = cast("Table", User.__table__)
LEDGER = cast("Table", LedgerEntry.__table__)
PAYMENTS = cast("Table", Payment.__table__)
UNIQUE_VIOLATION = "23505"


@dataclass(frozen=True)
class Credit:
    """A settled `payments` row written with a move (a refund's, a weekly bonus's)."""

    kind: PaymentType
    amount_kopecks: int
    description: str


@dataclass(frozen=True)
class Facts:
    """What deciding about one account and one ledger key needs, read in one statement."""

    applied: bool
    """The key has its ledger entry."""
    user_id: int | None
    """None: no such account."""
    balance: int | None
    """None: no such account, or a legacy account without a balance (it holds no entries)."""
    telegram_id: int | None


@dataclass(frozen=True)
class Entry:
    """A ledger entry and its account's Telegram id."""

    user_id: int
    amount: int
    telegram_id: int | None


@dataclass(frozen=True)
class Drift:
    user_id: int
    telegram_id: int | None
    balance: float | None
    ledger_sum: int


# --- changes


def account(*, user_id: int | None = None, telegram_id: int | None = None) -> ColumnElement[bool]:
    """The `users` row named by its id or its Telegram id."""
    if (user_id is None) == (telegram_id is None):
        raise ValueError("name an account by user_id or by telegram_id")
    return USERS.c.user_id == user_id if user_id is not None else USERS.c.telegram_id == telegram_id


def unapplied(key: str) -> ColumnElement[bool]:
    return ~exists().where(LEDGER.c.idempotency_key == key)


def can_move(amount: int, key: str, *, user_id: int) -> ColumnElement[bool]:
    """Whether `move` would apply now: for a change that must happen only together with it."""
    return (
        exists()
        .where(account(user_id=user_id), USERS.c.balance + amount >= 0)
        .correlate_except(USERS)
    ) & unapplied(key)


def move(
    amount: int,
    key: str,
    kind: LedgerKind,
    *,
    user_id: int | None = None,
    telegram_id: int | None = None,
    job_id: int | None = None,
    payment_id: int | None = None,
    reason: str | None = None,
    only_if: ColumnElement[bool] | None = None,
    after: CTE | None = None,
    credit: Credit | None = None,
) -> Insert:
    """Add `amount` (signed) to one account's balance, once per `key`, never below zero, and
    write its ledger entry (and `credit`'s `payments` row) from the row the UPDATE returned.

    One statement, which changes nothing and returns no row when the key was applied, the
    balance would go below zero, there is no such account, `only_if` (a condition on `users`)
    is false or `after` (a CTE of the same statement) yielded no row. Two statements racing
    on one key: the loser's ledger INSERT hits the unique key and it fails as a whole
    (`apply` turns that into a miss). Returns the entry's user_id and balance_after.
    """
    guard = [account(user_id=user_id, telegram_id=telegram_id), USERS.c.balance + amount >= 0]
    guard.append(unapplied(key))
    if only_if is not None:
        guard.append(only_if)
    if after is not None:
        guard.append(select(after).exists())
    moved = (
        update(USERS)
        .where(*guard)
        .values(balance=USERS.c.balance + amount)
        .returning(USERS.c.user_id, USERS.c.balance)
        .cte("moved")
    )
    entry = (
        insert(LEDGER)
        .from_select(
            [
                "user_id",
                "idempotency_key",
                "kind",
                "amount",
                "balance_after",
                "job_id",
                "payment_id",
                "reason",
            ],
            select(
                moved.c.user_id,
                literal(key, String()),
                literal(kind.value, String()),
                literal(amount, BigInteger()),
                sql_cast(moved.c.balance, BigInteger()),
                literal(job_id, Integer()),
                literal(payment_id, Integer()),
                literal(reason, Text()),
            ),
        )
        .returning(LEDGER.c.user_id, LEDGER.c.balance_after)
    )
    if credit is not None:
        entry = entry.add_cte(_credited(moved, credit).cte("credited"))
    return entry


def refusal(user_id: int, price: int, key: str, *, job_id: int, reason: str) -> Insert:
    """A refused debit's zero entry under its key, while the balance is still short of
    `price`: a replay of the debit, after a top-up, then finds the job settled. Returns what
    `move` returns, and the shortfall."""
    statement = move(
        0,
        key,
        LedgerKind.debit,
        user_id=user_id,
        job_id=job_id,
        reason=reason,
        only_if=USERS.c.balance < price,
    )
    return statement.returning((price - LEDGER.c.balance_after).label("shortfall"))


def open_account(telegram_id: int, username: str | None, welcome: int) -> Select[Any]:
    """Open the account with `welcome` credits and their ledger entry, or refresh the username
    of the one there: one statement. Columns: user_id, balance, created."""
    statement = pg_insert(USERS).values(telegram_id=telegram_id, username=username, balance=welcome)
    opened = (
        statement.on_conflict_do_update(
            index_elements=[USERS.c.telegram_id], set_={"username": statement.excluded.username}
        )
        .returning(
            USERS.c.user_id,
            USERS.c.balance,
            (column("xmax") == 0).label("created"),  # inserted, not updated
        )
        .cte("opened")
    )
    result = select(opened.c.user_id, opened.c.balance, opened.c.created)
    if welcome <= 0:
        return result
    welcomed = insert(LEDGER).from_select(
        ["user_id", "idempotency_key", "kind", "amount", "balance_after"],
        select(
            opened.c.user_id,
            func.concat(WELCOME_KEY_PREFIX, opened.c.user_id),
            literal(LedgerKind.welcome.value, String()),
            literal(welcome, BigInteger()),
            literal(welcome, BigInteger()),
        ).where(opened.c.created),
    )
    return result.add_cte(welcomed.cte("welcomed"))


def _credited(moved: CTE, credit: Credit) -> Any:
    return insert(PAYMENTS).from_select(
        [
            "user_id",
            "amount",
            "currency",
            "status",
            "payment_type",
            "payment_method",
            "description",
            "paid_at",
        ],
        select(
            moved.c.user_id,
            literal(credit.amount_kopecks, Integer()),
            literal("RUB", String()),
            literal(PaymentStatus.succeeded, PAYMENTS.c.status.type),
            literal(credit.kind, PAYMENTS.c.payment_type.type),
            literal("internal", String()),
            literal(credit.description, Text()),
            func.now(),
        ),
    )


async def apply(uow: UnitOfWork, change: Change) -> Row[Any] | None:
    """`uow.apply(change)`, and on a miss (the guard matched nothing, or the statement lost
    the race for a ledger key to one that committed first: nothing was written either way)
    the events emitted for it are forgotten, and None says: read again, decide again."""
    try:
        row = await uow.apply(change)
    except IntegrityError as exc:
        if not _lost_key_race(exc):
            raise
        row = None
    if row is None:
        await uow.rollback()
    return row


def _lost_key_race(error: IntegrityError) -> bool:
    cause = error.orig.__cause__ if error.orig is not None else None
    return getattr(error.orig, "sqlstate", None) == UNIQUE_VIOLATION and (
        getattr(cause, "table_name", None) == LEDGER.name
    )


# --- reads


async def facts(
    uow: UnitOfWork, key: str, *, user_id: int | None = None, telegram_id: int | None = None
) -> Facts:
    """Whether `key` was applied, and the account (if any), as they are now."""
    found = (
        select(USERS.c.user_id, USERS.c.balance, USERS.c.telegram_id)
        .where(account(user_id=user_id, telegram_id=telegram_id))
        .subquery("found")
    )
    applied = exists().where(LEDGER.c.idempotency_key == key).label("applied")
    statement = select(applied, found.c.user_id, found.c.balance, found.c.telegram_id).select_from(
        select(literal(1)).subquery("one").outerjoin(found, true())
    )
    row = (await uow.read(statement)).one()
    return Facts(
        applied=bool(row.applied),
        user_id=row.user_id,
        balance=None if row.balance is None else int(row.balance),
        telegram_id=row.telegram_id,
    )


async def entry(uow: UnitOfWork, key: str) -> Entry | None:
    """The ledger entry under `key`, if any."""
    row = (
        await uow.read(
            select(LEDGER.c.user_id, LEDGER.c.amount, USERS.c.telegram_id)
            .join(USERS, USERS.c.user_id == LEDGER.c.user_id)
            .where(LEDGER.c.idempotency_key == key)
        )
    ).first()
    return None if row is None else Entry(int(row.user_id), int(row.amount), row.telegram_id)


async def drifts(connection: AsyncConnection) -> list[Drift]:
    """Every account whose balance differs from its ledger sum."""
    totals = (
        select(LEDGER.c.user_id, func.sum(LEDGER.c.amount).label("total"))
        .group_by(LEDGER.c.user_id)
        .subquery("totals")
    )
    ledger_sum = func.coalesce(totals.c.total, 0)
    rows = await connection.execute(
        select(USERS.c.user_id, USERS.c.telegram_id, USERS.c.balance, ledger_sum)
        .select_from(USERS.outerjoin(totals, totals.c.user_id == USERS.c.user_id))
        .where(USERS.c.balance.is_distinct_from(sql_cast(ledger_sum, Float())))
        .order_by(USERS.c.user_id)
    )
    return [Drift(int(r[0]), r[1], r[2], int(r[3])) for r in rows]


async def count_accounts(connection: AsyncConnection) -> int:
    return int((await connection.execute(select(func.count()).select_from(USERS))).scalar_one())
