"""The `payments` and `payment_logs` rows as SQLAlchemy Core statements, run by the caller's
unit of work. Every transition of a payment is guarded by the status it leaves (`pending`), so
it happens at most once."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    Row,
    Select,
    String,
    Table,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.selectable import CTE

from billing import accounts
from billing.accounts import LEDGER, PAYMENTS, USERS
from billing.domain import (
    CARD,
    STARS_CURRENCY,
    TELEGRAM_STARS,
    LedgerKind,
    LocalPayment,
    RemotePayment,
    payment_method,
    stars_key,
    topup_key,
    topup_refund_key,
)
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
    PAYMENTS.c.receipt_contact,
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
        receipt_contact=row.receipt_contact,
    )


def _payments() -> Select[Any]:
    return select(*_LOCAL).join(USERS, USERS.c.user_id == PAYMENTS.c.user_id)


def by_request(request_id: uuid.UUID) -> Select[Any]:
    return _payments().where(PAYMENTS.c.request_id == request_id)


def by_id(payment_id: int) -> Select[Any]:
    return _payments().where(PAYMENTS.c.id == payment_id)


def topup_by_id(payment_id: int) -> Select[Any]:
    return _payments().where(
        PAYMENTS.c.id == payment_id, PAYMENTS.c.payment_type == PaymentType.payment
    )


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
            PAYMENTS.c.payment_method.is_distinct_from(TELEGRAM_STARS),  # paid; nothing to ask
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
    receipt_contact: str | None = None,
    method: str = CARD,
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
                "receipt_contact",
            ],
            select(
                USERS.c.user_id,
                literal(amount_kopecks, Integer()),
                literal(currency, String()),
                literal(PaymentStatus.pending, PAYMENTS.c.status.type),
                literal(PaymentType.payment, PAYMENTS.c.payment_type.type),
                literal(method, String()),
                literal(description, String()),
                literal(request_id, PAYMENTS.c.request_id.type),
                literal(credits, Integer()),
                literal(receipt_contact, String()),
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
    from_status: str = "pending",
    paid_at: datetime | None = None,
    income_kopecks: int | None = None,
) -> Update:
    """`from_status` (pending) -> `to`, at most once: no row when the row was no longer in it.

    `unbound_only`: only while no YooKassa payment is attached (a creation that may still be
    finishing must not be closed under the user's feet). A success records when the provider
    took the money (`paid_at`, now when it does not say) and the shop's net `income_kopecks`.
    Columns: id, user_id.
    """
    guard = [PAYMENTS.c.id == payment_id, PAYMENTS.c.status == PaymentStatus(from_status)]
    if unbound_only:
        guard.append(PAYMENTS.c.yukassa_payment_id.is_(None))
    if only_if is not None:
        guard.append(only_if)
    values: dict[str, Any] = {"status": PaymentStatus(to), "updated_at": func.now()}
    if values["status"] is PaymentStatus.succeeded:
        values["paid_at"] = func.now() if paid_at is None else literal(paid_at, DateTime(True))
    if income_kopecks is not None:
        values["income_amount"] = income_kopecks
    if method_type:
        values["payment_method"] = payment_method(method_type)
    if method_details:
        values["payment_method_details"] = json.dumps(method_details, ensure_ascii=False)
    return (
        sql_update(PAYMENTS)
        .where(*guard)
        .values(values)
        .returning(PAYMENTS.c.id, PAYMENTS.c.user_id)
    )


def credit(local: LocalPayment, remote: RemotePayment) -> tuple[Insert, dict[str, Any]]:
    """pending (or closed by us, and paid after all) -> succeeded, the credit through the
    ledger (`topup:<yookassa id>`) and the legacy log row: one statement, which changes nothing
    at all unless all of it applies. Returns what `accounts.move` returns; the statement and
    its values."""
    settled = transition(
        local.id,
        "succeeded",
        method_type=remote.method_type,
        method_details=remote.method_details,
        only_if=accounts.can_move("user_id"),  # the move's own values, bound below
        from_status=local.status,
        paid_at=remote.captured_at,
        income_kopecks=remote.income_kopecks,
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


def credit_stars(local: LocalPayment, charge_id: str) -> tuple[Insert, dict[str, Any]]:
    """A Stars payment's row pending -> succeeded, its credit through the ledger
    (`stars:<telegram_payment_charge_id>`) and its legacy log row (the amount in Stars, the
    charge id as its payment id): one statement, all of it or nothing. As `credit`."""
    settled = transition(
        local.id,
        "succeeded",
        method_details={"telegram_payment_charge_id": charge_id},
        only_if=accounts.can_move("user_id"),
    ).cte("settled")
    moved, params = accounts.move(
        local.credits or 0,
        stars_key(charge_id),
        LedgerKind.topup,
        user_id=local.user_id,
        payment_id=local.id,
        after=settled,
    )
    logged = insert(PAYMENT_LOGS).from_select(
        ["user_id", "amount", "status", "payment_id"],
        select(
            settled.c.user_id,
            literal(float(local.amount_kopecks), Float()),
            literal("succeeded", String()),
            literal(charge_id, String()),
        ),
    )
    return moved.add_cte(logged.cte("logged")), params


def cancel(local: LocalPayment, remote: RemotePayment) -> Select[Any]:
    """pending -> cancelled and the legacy log row; no row when it was no longer pending."""
    return close(local, "cancelled", "canceled")


def close(
    local: LocalPayment,
    status: str,
    logged_as: str,
    *,
    unbound_only: bool = False,
    refusal: str | None = None,
) -> Select[Any]:
    """pending -> `status` (cancelled, failed) with its legacy log row (`logged_as`: canceled,
    expired, failed), one statement; no row when it was no longer pending. `refusal`: why
    (YooKassa's words), kept in the row's details for whoever asks again. Columns: id."""
    details = None if refusal is None else {"refusal": refusal}
    settled = transition(local.id, status, unbound_only=unbound_only, method_details=details).cte(
        "settled"
    )
    return select(settled.c.id).add_cte(
        _logged(settled, local, logged_as, local.yookassa_id).cte("logged")
    )


def _logged(settled: CTE, local: LocalPayment, status: str, yookassa_id: str | None) -> Insert:
    """The customer's old `payment_logs` row, kept in step for their tools."""
    return insert(PAYMENT_LOGS).from_select(
        ["user_id", "amount", "status", "payment_id"],
        select(
            settled.c.user_id,
            literal(_logged_amount(local), Float()),
            literal(status, String()),
            literal(yookassa_id, String()),
        ),
    )


def _logged_amount(local: LocalPayment) -> float:
    """Rubles for the customer's old tools; Stars as they are (a Stars payment's log row)."""
    stars = local.currency == STARS_CURRENCY
    return float(local.amount_kopecks) if stars else local.amount_kopecks / 100


def mark_checked(payment_id: int) -> Update:
    """Reconciliation looked at this pending row and could not settle it yet."""
    return (
        sql_update(PAYMENTS)
        .where(PAYMENTS.c.id == payment_id, PAYMENTS.c.status == PaymentStatus.pending)
        .values(updated_at=func.now())
        .returning(PAYMENTS.c.id)
    )


# --- refunds to the buyer: `payments` rows of type `refund` naming their top-up (`refund_of`)


def refunds_of(payment_id: int) -> Select[Any]:
    """Kopecks of the top-up's refunds that are done or under way (columns: kopecks)."""
    return select(func.coalesce(func.sum(PAYMENTS.c.amount), 0).label("kopecks")).where(
        PAYMENTS.c.refund_of == payment_id,
        PAYMENTS.c.payment_type == PaymentType.refund,
        PAYMENTS.c.status.in_([PaymentStatus.pending, PaymentStatus.succeeded]),
    )


def pending_refunds_older_than(age_s: float, limit: int) -> Select[Any]:
    """Refunds YooKassa took but had not finished when last asked (and no notification has
    applied since), least recently checked first."""
    return (
        _payments()
        .where(
            PAYMENTS.c.status == PaymentStatus.pending,
            PAYMENTS.c.payment_type == PaymentType.refund,
            PAYMENTS.c.refund_of.is_not(None),
            PAYMENTS.c.yukassa_payment_id.is_not(None),
            PAYMENTS.c.created_at < func.now() - timedelta(seconds=age_s),
        )
        .order_by(PAYMENTS.c.updated_at.asc().nulls_first(), PAYMENTS.c.id)
        .limit(limit)
    )


def unsent_refunds_older_than(age_s: float, limit: int) -> Select[Any]:
    """Refunds to YooKassa whose creation was never answered (every call unreachable): pending
    with no YooKassa id, asked at least `age_s` ago, least recently checked first; with the
    top-up they refund (`refund_of`), the operator's `description` and their `age_s`. Stars
    refunds are left to the gateway's answer."""
    age = func.extract("epoch", func.now() - PAYMENTS.c.created_at)
    return (
        _payments()
        .add_columns(PAYMENTS.c.refund_of, PAYMENTS.c.description, age.label("age_s"))
        .where(
            PAYMENTS.c.status == PaymentStatus.pending,
            PAYMENTS.c.payment_type == PaymentType.refund,
            PAYMENTS.c.refund_of.is_not(None),
            PAYMENTS.c.yukassa_payment_id.is_(None),
            PAYMENTS.c.currency != STARS_CURRENCY,
            PAYMENTS.c.created_at < func.now() - timedelta(seconds=age_s),
        )
        .order_by(PAYMENTS.c.updated_at.asc().nulls_first(), PAYMENTS.c.id)
        .limit(limit)
    )


async def refusal(uow: UnitOfWork, payment_id: int) -> str:
    """Why a closed row was refused (`close`'s `refusal`), or empty."""
    details = (
        await uow.read(select(PAYMENTS.c.payment_method_details).where(PAYMENTS.c.id == payment_id))
    ).scalar_one_or_none()
    found = json.loads(details).get("refusal") if details else None
    return found if isinstance(found, str) else ""


async def stars_charge(uow: UnitOfWork, payment_id: int) -> str | None:
    """The `telegram_payment_charge_id` a Stars top-up was credited under, if it was."""
    details = (
        await uow.read(
            select(PAYMENTS.c.payment_method_details).where(
                PAYMENTS.c.id == payment_id, PAYMENTS.c.payment_method == TELEGRAM_STARS
            )
        )
    ).scalar_one_or_none()
    charge = json.loads(details).get("telegram_payment_charge_id") if details else None
    return charge if isinstance(charge, str) else None


def by_refund_request(request_id: uuid.UUID) -> Select[Any]:
    return _payments().where(
        PAYMENTS.c.request_id == request_id, PAYMENTS.c.payment_type == PaymentType.refund
    )


def by_refund_id(refund_id: str) -> Select[Any]:
    return _payments().where(
        PAYMENTS.c.yukassa_payment_id == refund_id, PAYMENTS.c.payment_type == PaymentType.refund
    )


def open_refund(
    topup: LocalPayment,
    *,
    request_id: uuid.UUID | None,
    amount_kopecks: int,
    credits: int,
    description: str,
    refund_id: str | None = None,
) -> Insert:
    """A refund's pending row: once per request id (or YooKassa refund id); columns: id."""
    row = {
        "user_id": topup.user_id,
        "amount": amount_kopecks,
        "currency": topup.currency,
        "status": PaymentStatus.pending,
        "payment_type": PaymentType.refund,
        "payment_method": select(PAYMENTS.c.payment_method)
        .where(PAYMENTS.c.id == topup.id)
        .scalar_subquery(),
        "description": description,
        "request_id": request_id,
        "credits": credits,
        "refund_of": topup.id,
        "yukassa_payment_id": refund_id,
        "receipt_contact": topup.receipt_contact,
    }
    return pg_insert(PAYMENTS).values(row).on_conflict_do_nothing().returning(PAYMENTS.c.id)


def claim_refund(topup_id: int, refund_id: str, amount_kopecks: int) -> Update:
    """Record a refund YooKassa made on our own pending refund of the same top-up and amount
    that has no YooKassa id yet (its notification came before our call returned); columns: id."""
    taken = select(PAYMENTS.c.id).where(PAYMENTS.c.yukassa_payment_id == refund_id).exists()
    ours = (
        select(PAYMENTS.c.id)
        .where(
            PAYMENTS.c.refund_of == topup_id,
            PAYMENTS.c.payment_type == PaymentType.refund,
            PAYMENTS.c.status == PaymentStatus.pending,
            PAYMENTS.c.yukassa_payment_id.is_(None),
            PAYMENTS.c.amount == amount_kopecks,
        )
        .order_by(PAYMENTS.c.id)
        .limit(1)
        .scalar_subquery()
    )
    return (
        sql_update(PAYMENTS)
        .where(PAYMENTS.c.id == ours, ~taken)
        .values(yukassa_payment_id=refund_id, updated_at=func.now())
        .returning(PAYMENTS.c.id)
    )


def attach_refund(payment_id: int, refund_id: str) -> Update:
    """Record YooKassa's refund id on our refund row; no row when it already has one, or
    another row holds this refund (its notification came first and opened one)."""
    taken = select(PAYMENTS.c.id).where(PAYMENTS.c.yukassa_payment_id == refund_id).exists()
    return (
        sql_update(PAYMENTS)
        .where(PAYMENTS.c.id == payment_id, PAYMENTS.c.yukassa_payment_id.is_(None), ~taken)
        .values(yukassa_payment_id=refund_id, updated_at=func.now())
        .returning(PAYMENTS.c.id)
    )


def refunded(
    refund: LocalPayment, refund_id: str, *, balance: Decimal | int
) -> tuple[Insert, dict[str, Any]]:
    """pending -> succeeded for the refund row, its credits out through the ledger
    (`topup_refund:<refund id>`) as far as `balance` (read just before) holds them, the rest
    being the shortfall (what the buyer spent already), and the legacy log row: one
    statement, all of it or nothing, and nothing unless the balance is still `balance` when
    there is a shortfall (a top-up meanwhile would make it smaller). Whole credits come out:
    the fraction of an adopted balance stays with the buyer. Run it in a transaction holding
    the account (`accounts.locked`): the row's transition is a CTE of its own, and a miss
    autocommitted would keep it while the credits stay."""
    credits = refund.credits or 0
    taken = min(math.floor(balance), credits)
    settled = transition(refund.id, "succeeded", only_if=accounts.can_move("user_id")).cte(
        "settled"
    )
    shortfall = (refund.credits or 0) - taken
    moved, params = accounts.move(
        -taken,
        topup_refund_key(refund_id),
        LedgerKind.topup_refund,
        user_id=refund.user_id,
        payment_id=refund.id,
        reason=f"refund {refund_id}: {credits} credits bought back, {shortfall} short",
        only_if=USERS.c.balance == balance if shortfall else None,
        after=settled,
    )
    return moved.add_cte(_logged(settled, refund, "refunded", refund_id).cte("logged")), params


SHORTFALL = (PAYMENTS.c.credits + LEDGER.c.amount).label("shortfall")


def refund_shortfalls() -> Select[Any]:
    """Refunds whose credits the buyer had spent in part: what the ledger could not take back.
    Columns: refund (our row), payment (the top-up), telegram_id, credits, taken, shortfall."""
    return (
        select(
            PAYMENTS.c.id.label("refund"),
            PAYMENTS.c.refund_of.label("payment"),
            USERS.c.telegram_id,
            PAYMENTS.c.credits,
            (-LEDGER.c.amount).label("taken"),
            SHORTFALL,
        )
        .join(LEDGER, LEDGER.c.payment_id == PAYMENTS.c.id)
        .join(USERS, USERS.c.user_id == PAYMENTS.c.user_id)
        .where(
            PAYMENTS.c.payment_type == PaymentType.refund,
            PAYMENTS.c.refund_of.is_not(None),
            LEDGER.c.kind == LedgerKind.topup_refund.value,
            SHORTFALL > 0,
        )
        .order_by(PAYMENTS.c.id)
    )
