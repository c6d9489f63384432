"""The `payments` and `payment_logs` rows as SQLAlchemy Core statements, run by the caller's
unit of work. Every transition of a payment is guarded by the status it leaves (`pending`), so
it happens at most once."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Float, Integer, Row, Select, String, Table, func, insert, literal, select
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.selectable import CTE

from billing import accounts
from billing.accounts import PAYMENTS, USERS
from billing.domain import LedgerKind, LocalPayment, RemotePayment, topup_key
from billing.models import PaymentLog, PaymentStatus, PaymentType
from messaging.unit_of_work import UnitOfWork

PAYMENT_LOGS = cast("Table", PaymentLog.__table__)
_LOCAL = (
    PAYMENTS.c.id,
    PAYMENTS.c.user_id,
    PAYMENTS.c.amount,
    PAYMENTS.c.currency,
    PAYMENTS.c.status,
    PAYMENTS.c.yukassa_payment_id,
    PAYMENTS.c.credits,
    USERS.c.telegram_id,
    PAYMENTS.c.request_id,
)


def local(row: Row[Any]) -> LocalPayment:
    """A row selected by one of this module's reads as the domain's `LocalPayment`."""
    return LocalPayment(
        id=int(row.id),
        user_id=int(row.user_id),
        amount_kopecks=int(row.amount),
        currency=str(row.currency),
        status=row.status.value,
        yookassa_id=row.yukassa_payment_id,
        credits=row.credits,
        telegram_id=row.telegram_id,
        request_id=row.request_id,
    )


def _payments() -> Select[Any]:
    return select(*_LOCAL).join(USERS, USERS.c.user_id == PAYMENTS.c.user_id)


def by_request(request_id: uuid.UUID) -> Select[Any]:
    return _payments().where(PAYMENTS.c.request_id == request_id)


def by_id(payment_id: int) -> Select[Any]:
    return _payments().where(PAYMENTS.c.id == payment_id)


def by_yookassa_id(yookassa_id: str) -> Select[Any]:
    return _payments().where(
        PAYMENTS.c.yukassa_payment_id == yookassa_id,
        PAYMENTS.c.payment_type == PaymentType.payment,
    )


async def find(uow: UnitOfWork, statement: Select[Any]) -> LocalPayment | None:
    """The payment `statement` (one of the reads above) selects, if any."""
    row = (await uow.read(statement)).first()
    return None if row is None else local(row)


def pending_older_than(age_s: float, limit: int) -> Select[Any]:
    """Our top-ups still pending after `age_s`, with their request id and age in seconds.

    Least recently checked first (`mark_checked` moves a row it could not settle to the back),
    so rows that stay unresolvable never starve newer ones. Rows without a `request_id` were
    not opened by us (the customer's older history) and are left to an operator.
    """
    age = func.extract("epoch", func.now() - PAYMENTS.c.created_at)
    return (
        _payments()
        .add_columns(age.label("age_s"))
        .where(
            PAYMENTS.c.status == PaymentStatus.pending,
            PAYMENTS.c.payment_type == PaymentType.payment,
            PAYMENTS.c.request_id.is_not(None),
            PAYMENTS.c.created_at < func.now() - timedelta(seconds=age_s),
        )
        .order_by(PAYMENTS.c.updated_at.asc().nulls_first(), PAYMENTS.c.id)
        .limit(limit)
    )


def open_topup(
    *,
    request_id: uuid.UUID,
    user_id: int,
    amount_kopecks: int,
    credits: int,
    currency: str,
    description: str,
) -> Insert:
    """The pending payment of a top-up request: created once (if the account exists), left as
    it is on every retry; `by_request` finds it."""
    return (
        pg_insert(PAYMENTS)
        .from_select(
            [
                "user_id",
                "amount",
                "currency",
                "status",
                "payment_type",
                "payment_method",
                "description",
                "request_id",
                "credits",
            ],
            select(
                USERS.c.user_id,
                literal(amount_kopecks, Integer()),
                literal(currency, String()),
                literal(PaymentStatus.pending, PAYMENTS.c.status.type),
                literal(PaymentType.payment, PAYMENTS.c.payment_type.type),
                literal("card", String()),
                literal(description, String()),
                literal(request_id, PAYMENTS.c.request_id.type),
                literal(credits, Integer()),
            ).where(USERS.c.user_id == user_id),
        )
        .on_conflict_do_nothing(index_elements=[PAYMENTS.c.request_id])
    )


def attach_yookassa(payment_id: int, yookassa_id: str, confirmation_url: str) -> Update:
    """Record the YooKassa payment of our row; no row when another attempt already did, or the
    row was settled meanwhile."""
    return (
        sql_update(PAYMENTS)
        .where(
            PAYMENTS.c.id == payment_id,
            PAYMENTS.c.yukassa_payment_id.is_(None),
            PAYMENTS.c.status == PaymentStatus.pending,
        )
        .values(
            yukassa_payment_id=yookassa_id, confirmation_url=confirmation_url, updated_at=func.now()
        )
        .returning(PAYMENTS.c.id)
    )


def transition(
    payment_id: int,
    to: str,
    *,
    method_type: str | None = None,
    method_details: dict[str, Any] | None = None,
    unbound_only: bool = False,
    only_if: ColumnElement[bool] | None = None,
) -> Update:
    """pending -> `to`, at most once: no row when the row was no longer pending.

    `unbound_only`: only while no YooKassa payment is attached (a creation that may still be
    finishing must not be closed under the user's feet). Columns: id, user_id.
    """
    guard = [PAYMENTS.c.id == payment_id, PAYMENTS.c.status == PaymentStatus.pending]
    if unbound_only:
        guard.append(PAYMENTS.c.yukassa_payment_id.is_(None))
    if only_if is not None:
        guard.append(only_if)
    values: dict[str, Any] = {"status": PaymentStatus(to), "updated_at": func.now()}
    if values["status"] is PaymentStatus.succeeded:
        values["paid_at"] = func.now()
    if method := (method_type or "")[:50]:
        values["payment_method"] = method
    if method_details:
        values["payment_method_details"] = json.dumps(method_details, ensure_ascii=False)
    return (
        sql_update(PAYMENTS)
        .where(*guard)
        .values(values)
        .returning(PAYMENTS.c.id, PAYMENTS.c.user_id)
    )


def credit(local: LocalPayment, remote: RemotePayment) -> tuple[Insert, dict[str, Any]]:
    """pending -> succeeded, the credit through the ledger (`topup:<yookassa id>`) and the
    legacy log row: one statement, which changes nothing at all unless all of it applies.
    Returns what `accounts.move` returns; the statement and its values."""
    settled = transition(
        local.id,
        "succeeded",
        method_type=remote.method_type,
        method_details=remote.method_details,
        only_if=accounts.can_move("user_id"),  # the move's own values, bound below
    ).cte("settled")
    moved, params = accounts.move(
        local.credits or 0,
        topup_key(remote.id),
        LedgerKind.topup,
        user_id=local.user_id,
        payment_id=local.id,
        after=settled,
    )
    return moved.add_cte(_logged(settled, local, "succeeded", remote.id).cte("logged")), params


def cancel(local: LocalPayment, remote: RemotePayment) -> Select[Any]:
    """pending -> cancelled and the legacy log row; no row when it was no longer pending."""
    settled = transition(local.id, "cancelled").cte("settled")
    return select(settled.c.id).add_cte(
        _logged(settled, local, "canceled", remote.id).cte("logged")
    )


def _logged(settled: CTE, local: LocalPayment, status: str, yookassa_id: str) -> Insert:
    """The customer's old `payment_logs` row, kept in step for their tools."""
    return insert(PAYMENT_LOGS).from_select(
        ["user_id", "amount", "status", "payment_id"],
        select(
            settled.c.user_id,
            literal(local.amount_kopecks / 100, Float()),
            literal(status, String()),
            literal(yookassa_id, String()),
        ),
    )


def mark_checked(payment_id: int) -> Update:
    """Reconciliation looked at this pending row and could not settle it yet."""
    return (
        sql_update(PAYMENTS)
        .where(PAYMENTS.c.id == payment_id, PAYMENTS.c.status == PaymentStatus.pending)
        .values(updated_at=func.now())
        .returning(PAYMENTS.c.id)
    )
