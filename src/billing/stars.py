"""Telegram Stars: a payment the gateway saw Telegram confirm (`successful_payment`) is
credited once per `telegram_payment_charge_id`, with the credits its invoice offered (the
invoice's payload carries them; pre-checkout refused an offer no longer sold, and once Telegram
has taken the Stars, what the buyer was promised is what they get).

Nothing outside our database is called: the `payments` row (method `telegram_stars`, the amount
in Stars, currency XTR, request id derived from the charge id, so unique per charge) commits on
its own, then goes pending -> succeeded with its ledger entry, its `payment_logs` row and
PaymentSucceeded in one statement. A charge delivered twice finds its row succeeded and does
nothing.
"""

from __future__ import annotations

import logging

from billing import accounts, payments, versions
from billing.domain import TELEGRAM_STARS, stars_request
from billing.settings import BillingSettings
from contracts.events import PaymentSucceeded, StarsPaymentReceived
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

TRIES = 3


class StarsPaymentNotSettledError(RuntimeError):
    """The payment's row kept moving under us: the message is given back and retried."""


async def credit(event: StarsPaymentReceived, uow: UnitOfWork, settings: BillingSettings) -> None:
    charge = event.telegram_payment_charge_id
    credits = event.credits  # what the invoice the buyer paid offered (its payload says)
    request_id = stars_request(charge)
    await uow.commit_alone(
        payments.open_topup(
            request_id=request_id,
            user_id=event.user_id,
            amount_kopecks=event.amount,
            credits=credits,
            currency=event.currency,
            description=f"stars {event.package_id}: {credits} credits",
            method=TELEGRAM_STARS,
        )
    )
    for _ in range(TRIES):
        local = await payments.find(uow, payments.by_request(request_id))
        if local is None:
            # Telegram took the Stars of a user billing does not know: kept for the operator
            log.error("stars payment %s: unknown account %s", charge, event.user_id)
            return
        if local.status != "pending":
            log.info("stars payment %s was already credited (payment %s)", charge, local.id)
            return
        if local.telegram_id is not None:
            versions.emit(
                uow,
                PaymentSucceeded(
                    payment_id=local.id,
                    user_id=local.user_id,
                    telegram_id=local.telegram_id,
                    amount_kopecks=(local.credits or credits) * settings.kopecks_per_credit,
                    credits=local.credits or credits,
                    balance=0,
                ),
                correlation_id=str(request_id),
                fill={"balance": "balance_after"},
            )
        if await accounts.apply(uow, *payments.credit_stars(local, charge)) is not None:
            log.info("stars payment %s credited: payment %s", charge, local.id)
            return
    raise StarsPaymentNotSettledError(charge)
