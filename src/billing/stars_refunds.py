"""The gateway's answer to a Stars refund (StarsRefundSettled): Telegram refunded the Stars, so
the credits come back out through the ledger (`topup_refund:<charge id>`) as for YooKassa's
refunds, never below zero, once; or Telegram refused, and the refund's row is closed `failed`.

Billing asks (StarsRefundRequested, from `refunds.refund_topup`, the operators' use case); only
the gateway holds the bot token that `refundStarPayment` needs.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from billing import payments, refunds
from billing.accounts import PAYMENTS
from billing.domain import RemoteRefund
from billing.models import PaymentType
from contracts.events import StarsRefundSettled
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


async def settle(event: StarsRefundSettled, uow: UnitOfWork) -> None:
    charge = event.telegram_payment_charge_id
    row = await payments.find(
        uow,
        payments.by_id(event.refund_payment_id).where(
            PAYMENTS.c.payment_type == PaymentType.refund
        ),
    )
    if row is None or row.status != "pending":
        log.info("stars refund %s (charge %s) was settled before", event.refund_payment_id, charge)
        return
    if not event.refunded:
        log.error(
            "stars refund %s (charge %s) refused by Telegram: %s",
            row.id,
            charge,
            event.detail,
        )
        logged = replace(row, yookassa_id=charge)  # the log row names the charge, as its payment's
        await uow.apply(payments.close(logged, "failed", "refund_failed"))
        return
    remote = RemoteRefund(
        id=charge,
        payment_id=charge,
        status="succeeded",
        amount_kopecks=row.amount_kopecks,
        currency=row.currency,
    )
    shortfall = await refunds.apply_refund(uow, row, remote)
    now = await payments.find(uow, payments.by_id(row.id))
    if now is not None and now.status == "pending":
        # The charge's refund was applied under another row (two refunds of it asked at once;
        # Telegram refunded once, and answered this one CHARGE_ALREADY_REFUNDED).
        log.warning("stars refund %s: charge %s was refunded under another row", row.id, charge)
        await uow.apply(payments.close(replace(row, yookassa_id=charge), "failed", "refund_failed"))
        return
    log.info("stars refund %s (charge %s) applied, shortfall %s", row.id, charge, shortfall)
