"""Stars refunds: billing asks (StarsRefundRequested), the gateway, which alone holds the bot
token, calls Telegram's `refundStarPayment` and answers with the outcome (StarsRefundSettled,
through its outbox, in the same unit of work as the request's inbox mark).

Telegram refunds a charge once: asked again (billing asked twice, or this gateway died between
the call and its commit and the request came back) it answers `CHARGE_ALREADY_REFUNDED`, which
is the success it was the first time. Any other refusal (400, 403) is reported for billing to
record; Telegram unreachable, a 5xx or a 429 past the limiter's tries raises, and the request
comes back after the consumer's backoff.
"""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError

from contracts.events import StarsRefundRequested, StarsRefundSettled
from messaging.consumer import TransactionalConsumer
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

ALREADY_REFUNDED = "CHARGE_ALREADY_REFUNDED"
"""Telegram's description of a second refund of one charge (a 400 Bad Request)."""


class StarsRefunds:
    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def refund(self, event: StarsRefundRequested, uow: UnitOfWork) -> None:
        """Ask Telegram once per delivery (outside any transaction), then report."""
        charge = event.telegram_payment_charge_id
        try:
            await self._bot.refund_star_payment(
                user_id=event.telegram_id, telegram_payment_charge_id=charge
            )
            refunded, detail = True, ""
        except (TelegramBadRequest, TelegramForbiddenError) as exc:
            refunded, detail = ALREADY_REFUNDED in exc.message, exc.message
        if refunded:
            log.info("stars charge %s refunded to %s %s", charge, event.telegram_id, detail)
        else:
            log.error("stars charge %s: Telegram refused the refund: %s", charge, detail)
        uow.emit(
            StarsRefundSettled(
                refund_payment_id=event.refund_payment_id,
                telegram_id=event.telegram_id,
                telegram_payment_charge_id=charge,
                refunded=refunded,
                detail=detail[:2000],
            )
        )


def register(consumer: TransactionalConsumer, bot: Bot) -> None:
    consumer.on(StarsRefundRequested)(StarsRefunds(bot).refund)
