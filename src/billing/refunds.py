"""Refunds to the buyer: money back through YooKassa, the credits it bought back out of the
balance through the ledger, never below zero (what the buyer spent already is the shortfall,
recorded in the ledger entry and listed by `imagebot billing shortfalls`).

`refund_topup` is the operators' use case (`imagebot billing refund`, later the panel): whole or
part of a succeeded top-up, once per request key. Like a top-up it is fenced on both sides: the
pending `payments` row of type `refund` is committed first and found again by its request id,
and `Refund.create` is called with an Idempotence-Key derived from it, so asking again with the
same key, after any crash, reuses the row and YooKassa's refund. `apply_refund` applies a
refund YooKassa says succeeded, once (its ledger key): for the use case, and for the
`refund.succeeded` notification, which also adopts a refund made in YooKassa's dashboard.
"""

from __future__ import annotations

import enum
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from billing import accounts, payments, receipts
from billing.domain import (
    STARS_CURRENCY,
    LocalPayment,
    RemoteRefund,
    refund_credits,
    refund_description,
    refund_reason,
    refund_request_key,
    topup_refund_key,
)
from billing.settings import YooKassaSettings
from billing.yookassa_gateway import PaymentProvider, ProviderRejectedError, RefundDraft
from contracts.events import StarsRefundRequested, TopUpRefunded
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

TRIES = 3
_REQUESTS = uuid.UUID("6f1d2a3e-5b7c-4d8e-9f10-2a3b4c5d6e7f")


class RefundOutcome(enum.Enum):
    refunded = "refunded"
    """YooKassa refunded the money and the credits came out (as far as the balance held)."""
    pending = "pending"
    """YooKassa took the refund and has not finished it: its notification applies it."""
    unknown_payment = "unknown_payment"
    not_refundable = "not_refundable"
    """Not a succeeded YooKassa top-up."""
    too_much = "too_much"
    """More than what is left of the top-up after its other refunds."""
    rejected = "rejected"
    """YooKassa refused the refund."""


@dataclass(frozen=True)
class RefundResult:
    outcome: RefundOutcome
    refund_payment_id: int | None = None
    amount_kopecks: int = 0
    credits: int = 0
    """The credits the refund buys back."""
    shortfall: int = 0
    """Of those, what the balance no longer held (spent already)."""
    detail: str = ""
    currency: str = "RUB"
    """`amount_kopecks` is in Stars when this is XTR."""


def request_id(payment_id: int, key: str) -> uuid.UUID:
    """The refund request's id: one per top-up and operator's key."""
    return uuid.uuid5(_REQUESTS, f"{payment_id}:{key}")


async def refund_topup(
    unit_of_work: Callable[[], UnitOfWork],
    provider: PaymentProvider,
    settings: YooKassaSettings,
    *,
    payment_id: int,
    key: str,
    amount_kopecks: int | None = None,
    reason: str = "",
) -> RefundResult:
    """Refund (all that is left of, or `amount_kopecks` of) our top-up `payment_id` to the
    buyer, once per `key`. Raises ProviderUnavailableError when YooKassa cannot be reached:
    asking again with the same key then finishes the same refund."""
    request = request_id(payment_id, key)
    async with unit_of_work() as uow:
        topup = await payments.find(uow, payments.topup_by_id(payment_id))
        row = await payments.find(uow, payments.by_refund_request(request))
        refunded = int((await uow.read(payments.refunds_of(payment_id))).scalar_one())
        charge = await payments.stars_charge(uow, payment_id)
    if topup is None:
        return RefundResult(RefundOutcome.unknown_payment)
    if row is None and topup.currency == STARS_CURRENCY:
        refusal = _stars_refusal(topup, refunded, amount_kopecks, charge)
        if refusal is not None:
            return refusal
        row = await _open(unit_of_work, topup, request, topup.amount_kopecks, 0, reason)
    if topup.currency == STARS_CURRENCY:  # the gateway holds the bot token, not billing
        assert row is not None
        return await _ask_telegram(unit_of_work, topup, row)
    if row is None:
        if topup.status != "succeeded" or topup.yookassa_id is None or topup.request_id is None:
            return RefundResult(RefundOutcome.not_refundable, detail=f"it is {topup.status}")
        left = topup.amount_kopecks - refunded
        amount = left if amount_kopecks is None else amount_kopecks
        if not 0 < amount <= left:
            return RefundResult(RefundOutcome.too_much, detail=f"{left} kopecks left to refund")
        row = await _open(unit_of_work, topup, request, amount, refunded, reason)
    if row.status != "pending" or row.yookassa_id is not None:
        return await _resume(unit_of_work, provider, row)
    return await _create(unit_of_work, provider, settings, topup, row, reason)


async def resend(
    unit_of_work: Callable[[], UnitOfWork],
    provider: PaymentProvider,
    settings: YooKassaSettings,
    row: LocalPayment,
    topup_id: int,
    description: str | None,
) -> RefundResult:
    """Ask YooKassa again for a refund whose creation was never answered, as the same request
    (its Idempotence-Key and body): a refund YooKassa made then is the one it answers with now.
    Raises ProviderUnavailableError while YooKassa stays out of reach."""
    async with unit_of_work() as uow:
        topup = await payments.find(uow, payments.topup_by_id(topup_id))
    assert topup is not None
    reason = refund_reason(topup.id, description)
    return await _create(unit_of_work, provider, settings, topup, row, reason)


async def _create(
    unit_of_work: Callable[[], UnitOfWork],
    provider: PaymentProvider,
    settings: YooKassaSettings,
    topup: LocalPayment,
    row: LocalPayment,
    reason: str,
) -> RefundResult:
    """`Refund.create` for our pending row, keyed by its request id, and what YooKassa says
    applied: refused -> the row failed with YooKassa's words."""
    assert row.request_id is not None
    try:
        draft = _draft(settings, topup, row, reason)
        remote = await provider.refund(draft, refund_request_key(row.request_id))
    except ProviderRejectedError as exc:
        log.error("refund %s of payment %s refused by YooKassa: %s", row.id, topup.id, exc)
        async with unit_of_work() as uow:
            await uow.apply(payments.close(row, "failed", "refund_failed", refusal=str(exc)))
        return _result(RefundOutcome.rejected, row, detail=str(exc))
    async with unit_of_work() as uow:
        attached = await uow.apply(payments.attach_refund(row.id, remote.id))
    if attached is None:  # its notification came first: it recorded the id on a row
        async with unit_of_work() as uow:
            holder = await payments.find(uow, payments.by_refund_id(remote.id))
        assert holder is not None
        if holder.id != row.id:  # not ours (a dashboard refund of the same amount took it)
            async with unit_of_work() as uow:
                await uow.apply(payments.close(row, "failed", "refund_failed"))
        row = holder
    else:
        row = replace(row, yookassa_id=remote.id)
    return await _settle(unit_of_work, row, remote)


def _stars_refusal(
    topup: LocalPayment, refunded: int, amount: int | None, charge: str | None
) -> RefundResult | None:
    """Why a Stars top-up cannot be refunded (Telegram refunds a charge whole, once), if not."""
    if topup.status != "succeeded" or topup.telegram_id is None:
        return RefundResult(RefundOutcome.not_refundable, detail=f"it is {topup.status}")
    if charge is None:  # an adopted row, say: Telegram is asked by the charge's id alone
        detail = "no Telegram charge id is recorded for it"
        return RefundResult(RefundOutcome.not_refundable, detail=detail)
    if refunded:
        return RefundResult(RefundOutcome.too_much, detail="0 Stars left to refund")
    if amount not in (None, topup.amount_kopecks):
        detail = f"Telegram Stars are refunded whole: {topup.amount_kopecks} Stars"
        return RefundResult(RefundOutcome.not_refundable, detail=detail)
    return None


async def _ask_telegram(
    unit_of_work: Callable[[], UnitOfWork], topup: LocalPayment, row: LocalPayment
) -> RefundResult:
    """A Stars refund's row is settled by the gateway's answer (StarsRefundSettled); while it
    is pending, asking again asks the gateway again (Telegram refunds a charge once: a charge
    refunded already is a success there, so a repeated question cannot refund twice)."""
    if row.status != "pending":
        return _settled(row)
    async with unit_of_work() as uow:
        charge = await payments.stars_charge(uow, topup.id)
        assert charge is not None
        assert topup.telegram_id is not None
        uow.emit(
            StarsRefundRequested(
                refund_payment_id=row.id,
                payment_id=topup.id,
                telegram_id=topup.telegram_id,
                telegram_payment_charge_id=charge,
                amount=row.amount_kopecks,
            ),
            correlation_id=None if row.request_id is None else str(row.request_id),
        )
        await uow.commit()
    log.info(
        "stars refund %s of payment %s (charge %s) asked of Telegram", row.id, topup.id, charge
    )
    return _result(RefundOutcome.pending, row, detail="refundStarPayment asked of Telegram")


async def _open(
    unit_of_work: Callable[[], UnitOfWork],
    topup: LocalPayment,
    request: uuid.UUID,
    amount: int,
    refunded: int,
    reason: str,
) -> LocalPayment:
    credits = refund_credits(topup.credits or 0, topup.amount_kopecks, amount, refunded)
    async with unit_of_work() as uow:
        await uow.commit_alone(
            payments.open_refund(
                topup,
                request_id=request,
                amount_kopecks=amount,
                credits=credits,
                description=refund_description(topup.id, reason),
            )
        )
        row = await payments.find(uow, payments.by_refund_request(request))
    assert row is not None
    return row


def _draft(
    settings: YooKassaSettings, topup: LocalPayment, row: LocalPayment, reason: str
) -> RefundDraft:
    assert topup.yookassa_id is not None
    description = reason or f"refund of payment {topup.id}"
    return RefundDraft(
        yookassa_payment_id=topup.yookassa_id,
        amount_kopecks=row.amount_kopecks,
        currency=row.currency,
        description=description,
        receipt=receipts.receipt(
            settings,
            topup.receipt_contact,
            description=description,
            amount_kopecks=row.amount_kopecks,
            currency=row.currency,
        ),
        metadata={"payment_id": str(topup.id), "refund_payment_id": str(row.id)},
    )


async def _resume(
    unit_of_work: Callable[[], UnitOfWork], provider: PaymentProvider, row: LocalPayment
) -> RefundResult:
    """The request was made before: where it stands (finishing it if YooKassa has)."""
    if row.status == "pending" and row.yookassa_id is not None:
        return await _settle(unit_of_work, row, await provider.fetch_refund(row.yookassa_id))
    if row.status == "failed":
        async with unit_of_work() as uow:
            return _result(RefundOutcome.rejected, row, detail=await payments.refusal(uow, row.id))
    return _settled(row)


def _settled(row: LocalPayment) -> RefundResult:
    outcome = {"succeeded": RefundOutcome.refunded, "pending": RefundOutcome.pending}.get(
        row.status, RefundOutcome.rejected
    )
    return _result(outcome, row)


async def _settle(
    unit_of_work: Callable[[], UnitOfWork], row: LocalPayment, remote: RemoteRefund
) -> RefundResult:
    if remote.status == "pending":
        return _result(RefundOutcome.pending, row)
    if remote.status != "succeeded":
        async with unit_of_work() as uow:
            await uow.apply(payments.close(row, "failed", "refund_failed"))
        return _result(RefundOutcome.rejected, row, detail=f"YooKassa: {remote.status}")
    async with unit_of_work() as uow:
        shortfall = await apply_refund(uow, row, remote)
    return _result(RefundOutcome.refunded, row, shortfall=shortfall)


def _result(
    outcome: RefundOutcome, row: LocalPayment, *, shortfall: int = 0, detail: str = ""
) -> RefundResult:
    return RefundResult(
        outcome,
        row.id,
        row.amount_kopecks,
        row.credits or 0,
        shortfall,
        detail=detail,
        currency=row.currency,
    )


async def where_it_stands(
    unit_of_work: Callable[[], UnitOfWork], payment_id: int, key: str
) -> RefundResult | None:
    """The refund request `key` of top-up `payment_id` as it stands now, asking no one (the
    CLI waits with it for the gateway's answer to a Stars refund); None before it was made."""
    async with unit_of_work() as uow:
        row = await payments.find(uow, payments.by_refund_request(request_id(payment_id, key)))
    return None if row is None else _settled(row)


async def apply_refund(uow: UnitOfWork, row: LocalPayment, remote: RemoteRefund) -> int:
    """A refund YooKassa says succeeded, applied once: the row succeeded, the credits out as
    far as the balance holds them, the log row. The shortfall (0 when it was applied before)."""
    key = topup_refund_key(remote.id)
    for _ in range(TRIES):
        # In a transaction holding the account: a balance moving between this read and the
        # statement would make the statement settle the row and take nothing, autocommitted.
        await uow.execute(accounts.locked(row.user_id))
        found = await accounts.facts(uow, key, user_id=row.user_id)
        if found.applied or found.user_id is None:
            return 0
        balance = found.balance or 0
        whole = math.floor(balance)  # whole credits come out: an adopted fraction stays
        _tell_the_buyer(uow, row, whole)
        taken = await accounts.apply(uow, *payments.refunded(row, remote.id, balance=balance))
        if taken is not None:
            shortfall = max((row.credits or 0) - whole, 0)
            log_level = logging.WARNING if shortfall else logging.INFO
            log.log(
                log_level,
                "refund %s of payment %s: %s credits bought back, %s of them spent already",
                remote.id,
                row.id,
                row.credits,
                shortfall,
            )
            return shortfall
        now = await payments.find(uow, payments.by_id(row.id))
        if now is None or now.status != "pending":
            return 0
    raise RuntimeError(f"refund {remote.id} kept moving under its decision")


def _tell_the_buyer(uow: UnitOfWork, row: LocalPayment, balance: int) -> None:
    """TopUpRefunded, with the refund's own statement (forgotten if that does not apply)."""
    if row.telegram_id is None:
        return
    credits = row.credits or 0
    taken = min(balance, credits)
    uow.emit(
        TopUpRefunded(
            refund_payment_id=row.id,
            user_id=row.user_id,
            telegram_id=row.telegram_id,
            amount=row.amount_kopecks,
            currency=row.currency,
            credits=taken,
            shortfall=credits - taken,
            balance=0,
        ),
        correlation_id=None if row.request_id is None else str(row.request_id),
        fill={"balance": "balance_after_exact"},
    )


async def adopt_refund(
    uow: UnitOfWork, topup: LocalPayment, remote: RemoteRefund
) -> LocalPayment | None:
    """The row of a refund YooKassa made whose id we have not stored: our own pending refund
    of that amount whose call has not returned yet, or else (made in YooKassa's dashboard) a
    row opened under the refund's id, once."""
    claim = payments.claim_refund(topup.id, remote.id, remote.amount_kopecks)
    if (await uow.commit_alone(claim)).first() is not None:
        return await payments.find(uow, payments.by_refund_id(remote.id))
    refunded = int((await uow.read(payments.refunds_of(topup.id))).scalar_one())
    credits = refund_credits(
        topup.credits or 0, topup.amount_kopecks, remote.amount_kopecks, refunded
    )
    await uow.commit_alone(
        payments.open_refund(
            topup,
            request_id=None,
            amount_kopecks=remote.amount_kopecks,
            credits=credits,
            description=f"refund {remote.id} of payment {topup.id}",
            refund_id=remote.id,
        )
    )
    return await payments.find(uow, payments.by_refund_id(remote.id))
