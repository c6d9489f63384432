"""Accounts and the ledger as SQLAlchemy Core: every balance change is one guarded statement.

The statements are built here, once per shape with bound parameters, and handed out with
their values (`(statement, params)`) to the caller's unit of work: `apply` (the change, the
message's mark and its events as one statement, committed on its own) or, inside a
transaction, `uow.execute`. The database enforces what money must never do: the balance moves
only while it stays >= 0 (and `CHECK (balance >= 0)`), and a ledger key is applied at most once
(its unique index).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeAlias, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    Row,
    Select,
    String,
    Table,
    Text,
    bindparam,
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
from billing.models import CREDITS, LedgerEntry, Payment, PaymentStatus, PaymentType, User
from messaging.database import unique_violation
from messaging.unit_of_work import Change, UnitOfWork

USERS = cast("Table", User.__table__)
LEDGER = cast("Table", LedgerEntry.__table__)
PAYMENTS = cast("Table", Payment.__table__)


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
    balance: Decimal | None
    """None: no such account, or a legacy account without a balance (it holds no entries)."""
    telegram_id: int | None


@dataclass(frozen=True)
class Entry:
    """A ledger entry and its account's Telegram id."""

    user_id: int
    amount: Decimal
    telegram_id: int | None


@dataclass(frozen=True)
class Drift:
    user_id: int
    telegram_id: int | None
    balance: Decimal | None
    ledger_sum: Decimal


# --- changes
#
# The hot statements (a debit, a refund, a close, a refusal, the facts, an account opened) are
# built once per shape with bound parameters and run with the values: `uow.apply(*statement)`.
# Building SQLAlchemy constructs per message cost as much as running them. Every parameter's
# name is prefixed (`move_`, `credit_`, `facts_`, ...): one named like a column of a table the
# statement writes would be taken for that column's value.

Statement: TypeAlias = tuple[Change, dict[str, Any]]
"""A change built once per shape, with bound parameters, and its values."""
By: TypeAlias = Literal["user_id", "telegram_id"]
"""How a statement names its account."""

_AMOUNT = bindparam("move_amount", type_=CREDITS)
_KEY = bindparam("move_key", type_=String())
_KIND = bindparam("move_kind", type_=String())
_JOB_ID = bindparam("move_job_id", type_=Integer())
_PAYMENT_ID = bindparam("move_payment_id", type_=Integer())
_REASON = bindparam("move_reason", type_=Text())
_PRICE = bindparam("move_price", type_=BigInteger())
_ACCOUNT = {
    "user_id": USERS.c.user_id == bindparam("move_user_id", type_=Integer()),
    "telegram_id": USERS.c.telegram_id == bindparam("move_telegram_id", type_=BigInteger()),
}
_CREDIT_KOPECKS = bindparam("credit_kopecks", type_=Integer())
_CREDIT_KIND = bindparam("credit_kind", type_=PAYMENTS.c.payment_type.type)
_CREDIT_DESCRIPTION = bindparam("credit_description", type_=Text())


def _by(user_id: int | None, telegram_id: int | None) -> tuple[By, dict[str, Any]]:
    if (user_id is None) == (telegram_id is None):
        raise ValueError("name an account by user_id or by telegram_id")
    if user_id is not None:
        return "user_id", {"move_user_id": user_id}
    return "telegram_id", {"move_telegram_id": telegram_id}


def can_move(by: By = "user_id") -> ColumnElement[bool]:
    """Whether the move whose values are bound with it (`move`'s parameters) would apply now:
    for a change of the same statement that must happen only together with it."""
    return (
        exists().where(_ACCOUNT[by], USERS.c.balance + _AMOUNT >= 0).correlate_except(USERS)
    ) & ~exists().where(LEDGER.c.idempotency_key == _KEY)


def move(
    amount: Decimal | int,
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
) -> tuple[Insert, dict[str, Any]]:
    """Add `amount` (signed) to one account's balance, once per `key`, never below zero, and
    write its ledger entry (and `credit`'s `payments` row) from the row the UPDATE returned.

    One statement, which changes nothing and returns no row when the key was applied, the
    balance would go below zero, there is no such account, `only_if` (a condition on `users`)
    is false or `after` (a CTE of the same statement) yielded no row. Two statements racing
    on one key: the loser's ledger INSERT hits the unique key and it fails as a whole
    (`apply` turns that into a miss). Returns the entry's user_id and balance_after.

    The statement and its values: built once per shape, unless `only_if` or `after` make it
    one of a kind."""
    by, params = _by(user_id, telegram_id)
    params.update(
        move_amount=amount,
        move_key=key,
        move_kind=kind.value,
        move_job_id=job_id,
        move_payment_id=payment_id,
        move_reason=reason,
    )
    if credit is not None:
        params.update(
            credit_kopecks=credit.amount_kopecks,
            credit_kind=credit.kind,
            credit_description=credit.description,
        )
    if only_if is None and after is None:
        return _move_shape(by, credit is not None), params
    return _move(by, credit is not None, only_if=only_if, after=after), params


@functools.cache
def _move_shape(by: By, credited: bool) -> Insert:
    return _move(by, credited)


def _move(
    by: By,
    credited: bool,
    *,
    only_if: ColumnElement[bool] | None = None,
    after: CTE | None = None,
) -> Insert:
    guard = [_ACCOUNT[by], USERS.c.balance + _AMOUNT >= 0]
    guard.append(~exists().where(LEDGER.c.idempotency_key == _KEY))
    if only_if is not None:
        guard.append(only_if)
    if after is not None:
        guard.append(select(after).exists())
    moved = (
        update(USERS)
        .where(*guard)
        .values(balance=USERS.c.balance + _AMOUNT)
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
                _KEY,
                _KIND,
                _AMOUNT,
                moved.c.balance,
                _JOB_ID,
                _PAYMENT_ID,
                _REASON,
            ),
        )
        .returning(LEDGER.c.user_id, LEDGER.c.balance_after, *versions(LEDGER.c.balance_after))
    )
    if credited:
        entry = entry.add_cte(_credited(moved).cte("credited"))
    return entry


def versions(amount: ColumnElement[Any], *, whole: Any = func.floor) -> tuple[Any, ...]:
    """`amount` (a balance, a shortfall) as the two versions of billing's events carry it:
    exact, as the contract's decimal string (`<name>_exact`), and in whole credits (rounded
    down, a shortfall up with `whole=func.ceil`: `<name>_whole`), for `events.emit`'s fills."""
    return (
        sql_cast(func.trim_scale(amount), Text()).label(f"{amount.name}_exact"),
        sql_cast(whole(amount), BigInteger()).label(f"{amount.name}_whole"),
    )


def refusal(user_id: int, price: int, key: str, *, job_id: int, reason: str) -> Statement:
    """A refused debit's zero entry under its key, while the balance is still short of
    `price`: a replay of the debit, after a top-up, then finds the job settled. Returns what
    `move` returns, and the shortfall."""
    _, params = move(0, key, LedgerKind.debit, user_id=user_id, job_id=job_id, reason=reason)
    params["move_price"] = price
    return _refusal_shape(), params


@functools.cache
def _refusal_shape() -> Insert:
    statement = _move("user_id", False, only_if=USERS.c.balance < _PRICE)
    shortfall = (_PRICE - LEDGER.c.balance_after).label("shortfall")
    return statement.returning(shortfall, *versions(shortfall, whole=func.ceil))


def open_account(telegram_id: int, username: str | None, welcome: int) -> Statement:
    """Open the account with `welcome` credits and their ledger entry, or refresh the username
    of the one there: one statement. Columns: user_id, balance, created."""
    params = {"open_telegram_id": telegram_id, "open_username": username, "open_welcome": welcome}
    return _open_shape(welcome > 0), params


@functools.cache
def _open_shape(welcomed: bool) -> Select[Any]:
    welcome = bindparam("open_welcome", type_=CREDITS)
    statement = pg_insert(USERS).values(
        telegram_id=bindparam("open_telegram_id", type_=BigInteger()),
        username=bindparam("open_username", type_=String()),
        balance=welcome,
    )
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
    if not welcomed:
        return result
    welcomed_entry = insert(LEDGER).from_select(
        ["user_id", "idempotency_key", "kind", "amount", "balance_after"],
        select(
            opened.c.user_id,
            func.concat(WELCOME_KEY_PREFIX, opened.c.user_id),
            literal(LedgerKind.welcome.value, String()),
            welcome,
            welcome,
        ).where(opened.c.created),
    )
    return result.add_cte(welcomed_entry.cte("welcomed"))


def _credited(moved: CTE) -> Any:
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
            _CREDIT_KOPECKS,
            literal("RUB", String()),
            literal(PaymentStatus.succeeded, PAYMENTS.c.status.type),
            _CREDIT_KIND,
            literal("internal", String()),
            _CREDIT_DESCRIPTION,
            func.now(),
        ),
    )


async def apply(
    uow: UnitOfWork, change: Change, params: Mapping[str, Any] | None = None
) -> Row[Any] | None:
    """`uow.apply(change, params)`, and on a miss (the guard matched nothing, or the statement
    lost the race for a ledger key to one that committed first: nothing was written either
    way) the events emitted for it are forgotten, and None says: read again, decide again."""
    try:
        row = await uow.apply(change, params)
    except IntegrityError as exc:
        if not unique_violation(exc, LEDGER.name):  # lost the race for a ledger key
            raise
        row = None
    if row is None:
        await uow.rollback()
    return row


# --- reads


def locked(user_id: int) -> Select[Any]:
    """The account's row, locked until the unit's transaction ends: its balance holds still
    from a read to the change decided on it, and a change that misses rolls back whole."""
    return select(USERS.c.user_id).where(USERS.c.user_id == user_id).with_for_update()


async def facts(
    uow: UnitOfWork, key: str, *, user_id: int | None = None, telegram_id: int | None = None
) -> Facts:
    """Whether `key` was applied, and the account (if any), as they are now."""
    by, params = _by(user_id, telegram_id)
    params["move_key"] = key
    row = (await uow.read(_facts_shape(by), params)).one()
    return Facts(
        applied=bool(row.applied),
        user_id=row.user_id,
        balance=row.balance,
        telegram_id=row.telegram_id,
    )


@functools.cache
def _facts_shape(by: By) -> Select[Any]:
    found = (
        select(USERS.c.user_id, USERS.c.balance, USERS.c.telegram_id)
        .where(_ACCOUNT[by])
        .subquery("found")
    )
    applied = exists().where(LEDGER.c.idempotency_key == _KEY).label("applied")
    return select(applied, found.c.user_id, found.c.balance, found.c.telegram_id).select_from(
        select(literal(1)).subquery("one").outerjoin(found, true())
    )


_ENTRY = (
    select(LEDGER.c.user_id, LEDGER.c.amount, USERS.c.telegram_id)
    .join(USERS, USERS.c.user_id == LEDGER.c.user_id)
    .where(LEDGER.c.idempotency_key == _KEY)
)


async def entry(uow: UnitOfWork, key: str) -> Entry | None:
    """The ledger entry under `key`, if any."""
    row = (await uow.read(_ENTRY, {"move_key": key})).first()
    return None if row is None else Entry(int(row.user_id), row.amount, row.telegram_id)


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
        .where(USERS.c.balance.is_distinct_from(ledger_sum))
        .order_by(USERS.c.user_id)
    )
    return [Drift(int(r[0]), r[1], r[2], r[3]) for r in rows]


async def count_accounts(connection: AsyncConnection) -> int:
    return int((await connection.execute(select(func.count()).select_from(USERS))).scalar_one())
