"""Billing's money rules, free of I/O: ledger keys, ISO weeks, YooKassa verification.

SQL enforces the two that must hold under any concurrency: a balance never goes below zero
(a guarded update and a CHECK), and a ledger key moves money at most once (a unique index).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo


class LedgerKind(enum.StrEnum):
    opening = "opening"
    welcome = "welcome"
    debit = "debit"
    refund = "refund"
    topup = "topup"
    bonus = "bonus"
    adjustment = "adjustment"
    topup_refund = "topup_refund"
    """Credits a refund to the buyer takes back (never below zero)."""


WELCOME_KEY_PREFIX = "welcome:"
BONUS_KEY_PREFIX = "bonus:"
"""Where SQL builds these keys itself, per row: `prefix || user_id` (`:<week>` for bonuses)."""


def debit_key(job_id: int) -> str:
    return f"debit:job:{job_id}"


def refund_key(job_id: int) -> str:
    return f"refund:job:{job_id}"


def topup_key(yookassa_payment_id: str) -> str:
    return f"topup:{yookassa_payment_id}"


def stars_key(telegram_payment_charge_id: str) -> str:
    return f"stars:{telegram_payment_charge_id}"


def stars_request(telegram_payment_charge_id: str) -> uuid.UUID:
    """The `payments.request_id` of a Stars payment: one row per Telegram charge."""
    return uuid.uuid5(STARS_NAMESPACE, telegram_payment_charge_id)


STARS_NAMESPACE = uuid.UUID("5f0c2b8e-53a1-4d55-9d1e-0c7e2a1b7a11")


def topup_refund_key(yookassa_refund_id: str) -> str:
    return f"topup_refund:{yookassa_refund_id}"


def refund_request_key(request_id: object) -> str:
    """The YooKassa Idempotence-Key of a refund: the same however often it is asked again."""
    return f"refund-{request_id}"


REFUND_KEY_LIFE_S = 23 * 3600
"""How long a refund's Idempotence-Key may be sent again: YooKassa honours a key for 24 h from
its first request (an hour kept in hand); after that the same key could make a second refund."""


def refund_description(topup_id: int, reason: str) -> str:
    """A refund row's description: the operator's reason, read back by `refund_reason`."""
    return f"refund of payment {topup_id}: {reason}" if reason else f"refund of payment {topup_id}"


def refund_reason(topup_id: int, description: str | None) -> str:
    """The operator's reason a refund row's description holds (`refund_description`)."""
    prefix = f"refund of payment {topup_id}: "
    return (
        description.removeprefix(prefix) if description and description.startswith(prefix) else ""
    )


def refund_credits(
    credits: int, amount_kopecks: int, refund_kopecks: int, refunded_kopecks: int = 0
) -> int:
    """The credits a refund of `refund_kopecks` of a top-up takes back after its refunds of
    `refunded_kopecks`: all of them for the whole amount, in proportion (rounded down, in the
    buyer's favour) for a part; the parts of the whole amount add up to all of them."""

    def up_to(kopecks: int) -> int:
        if kopecks >= amount_kopecks:
            return credits
        return credits * kopecks // amount_kopecks

    return up_to(refunded_kopecks + refund_kopecks) - up_to(refunded_kopecks)


def bonus_key(user_id: int, week: str) -> str:
    return f"{BONUS_KEY_PREFIX}{user_id}:{week}"


def adjustment_key(token: str) -> str:
    return f"adjustment:{token}"


def grant_key(request_id: object) -> str:
    """An admin's /grant: one ledger entry per request, however often the command arrives."""
    return f"grant:{request_id}"


def creation_key(request_id: object) -> str:
    """The YooKassa Idempotence-Key of a top-up: the same for every redelivery of its request."""
    return f"topup-{request_id}"


def cancel_key(yookassa_payment_id: str) -> str:
    """The Idempotence-Key of cancelling a payment at YooKassa."""
    return f"cancel-{yookassa_payment_id}"


def iso_week(moment: datetime, time_zone: str) -> str:
    """`YYYY-Www` of `moment` in `time_zone` (the week turns on Monday midnight there)."""
    year, week, _ = moment.astimezone(ZoneInfo(time_zone)).isocalendar()
    return f"{year}-W{week:02d}"


def shortfall(balance: Decimal | int, price: int) -> Decimal:
    """What a balance lacks of a price (an adopted balance may hold a fraction)."""
    return max(Decimal(price) - balance, Decimal(0))


# --- YooKassa -----------------------------------------------------------------------------

YOOKASSA_TO_OURS = {"pending": "pending", "waiting_for_capture": "pending",
                    "succeeded": "succeeded", "canceled": "cancelled"}  # fmt: skip
"""YooKassa spells `canceled`; the customer's `PaymentStatus` spells `cancelled`."""
NOTIFICATION_STATUS = {"payment.succeeded": "succeeded", "payment.canceled": "canceled",
                       "payment.waiting_for_capture": "waiting_for_capture"}  # fmt: skip


CARD = "card"
"""The customer's spelling of a card payment (`payments.payment_method`'s default): YooKassa's
`bank_card`, and a YooKassa top-up whose method is not known yet."""
INTERNAL = "internal"
"""Credits that came from us, not from a buyer (weekly bonus, job refunds)."""
TELEGRAM_STARS = "telegram_stars"
STARS_CURRENCY = "XTR"
"""Telegram Stars' currency code: such a payment's `amount` is in Stars, not kopecks."""


def payment_method(yookassa_type: str | None) -> str:
    """One spelling per payment method in `payments.payment_method`: `card` for cards,
    YooKassa's own type for every other method (`sbp`, `yoo_money`, ...)."""
    if not yookassa_type or yookassa_type == "bank_card":
        return CARD
    return yookassa_type[:50]


def our_status(yookassa_status: str) -> str:
    try:
        return YOOKASSA_TO_OURS[yookassa_status]
    except KeyError:
        raise ValueError(f"unknown YooKassa payment status {yookassa_status!r}") from None


def yookassa_status(our: str) -> str:
    return {value: key for key, value in YOOKASSA_TO_OURS.items()}.get(our, our)


def amount_value(kopecks: int) -> str:
    """Kopecks as YooKassa's decimal string: 12345 -> "123.45"."""
    return f"{kopecks // 100}.{kopecks % 100:02d}"


def to_kopecks(value: str) -> int:
    """YooKassa's decimal string as kopecks; refuses fractions of a kopeck."""
    try:
        amount = Decimal(value) * 100
    except (InvalidOperation, TypeError):
        raise ValueError(f"not an amount: {value!r}") from None
    if amount != amount.to_integral_value() or amount < 0:
        raise ValueError(f"not a whole number of kopecks: {value!r}")
    return int(amount)


@dataclass(frozen=True)
class RemotePayment:
    """A payment as YooKassa's API reports it (the only version we trust)."""

    id: str
    status: str
    amount_kopecks: int
    currency: str
    metadata: dict[str, str]
    confirmation_url: str | None = None
    method_type: str | None = None
    method_details: dict[str, Any] = field(default_factory=dict)
    cancellation_reason: str | None = None
    captured_at: datetime | None = None
    """When YooKassa took the money: our `paid_at`."""
    income_kopecks: int | None = None
    """What reaches the shop after YooKassa's fee (`income_amount`)."""


@dataclass(frozen=True)
class RemoteRefund:
    """A refund as YooKassa's API reports it."""

    id: str
    payment_id: str
    status: str
    amount_kopecks: int
    currency: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class LocalPayment:
    """Our `payments` row of a top-up."""

    id: int
    user_id: int
    amount_kopecks: int
    currency: str
    status: str
    yookassa_id: str | None
    credits: int | None
    telegram_id: int | None
    request_id: uuid.UUID | None = None
    """The TopUpRequested that opened it; None on rows we did not open (the seed's history)."""
    receipt_contact: str | None = None
    """The buyer's email or phone its 54-FZ receipt went to."""

    @property
    def correlation_id(self) -> str | None:
        """Its events' correlation id: the top-up request's id, as on every event of the
        request (None, so an event's own id, for rows we did not open)."""
        return None if self.request_id is None else str(self.request_id)


def payment_mismatches(local: LocalPayment, remote: RemotePayment) -> list[str]:
    """What in the API's version of the payment contradicts our row; empty when it matches."""
    problems = []
    if remote.id != local.yookassa_id:
        problems.append(f"id {remote.id!r} != {local.yookassa_id!r}")
    if remote.amount_kopecks != local.amount_kopecks:
        problems.append(f"amount {remote.amount_kopecks} != {local.amount_kopecks} kopecks")
    if remote.currency != local.currency:
        problems.append(f"currency {remote.currency!r} != {local.currency!r}")
    if remote.metadata.get("payment_id") != str(local.id):
        problems.append(f"metadata payment_id {remote.metadata.get('payment_id')!r}")
    if remote.metadata.get("user_id") != str(local.user_id):
        problems.append(f"metadata user_id {remote.metadata.get('user_id')!r}")
    return problems


class Settlement(enum.Enum):
    """What a verified API status means for a payment row."""

    credit = "credit"  # pending -> succeeded: credit once
    cancel = "cancel"  # pending -> cancelled: nothing credited
    wait = "wait"  # still pending at YooKassa
    done = "done"  # already settled the same way: nothing to do
    conflict = "conflict"  # settled the other way: never undone silently, needs a human


def settle(local_status: str, remote_status: str) -> Settlement:
    """Payments move `pending -> succeeded | cancelled` at most once.

    One more move: a payment we closed (expired after `BILLING_PENDING_EXPIRY_S`) that YooKassa
    says the buyer paid after all is credited: the money was taken, the credits are owed.
    YooKassa never turns its own `canceled` into `succeeded`, so only our closing gets here."""
    target = our_status(remote_status)
    if target == "pending":
        return Settlement.wait if local_status == "pending" else Settlement.conflict
    if local_status == "pending":
        return Settlement.credit if target == "succeeded" else Settlement.cancel
    if local_status in ("cancelled", "failed") and target == "succeeded":
        return Settlement.credit
    return Settlement.done if local_status == target else Settlement.conflict
