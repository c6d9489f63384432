"""Free credits are not farmed: the signals billing can see limit the welcome and weekly bonuses
(shared devices are invisible to a bot; accounts that never pay and accounts opened in a burst
are not).

- An account that never paid (no succeeded payment) gets the weekly bonus only in its first
  `BONUS_PAYMENTLESS_WEEKS` weeks; paying once restores it for good.
- While `BILLING_WELCOME_BURST_ACCOUNTS` or more accounts were opened within
  `BILLING_WELCOME_BURST_WINDOW_S`, a new account opens without welcome credits (logged).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, or_, select

from billing.accounts import PAYMENTS, USERS
from billing.models import PaymentStatus, PaymentType
from billing.settings import BillingSettings
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


def paid_or_new(now: datetime, weeks: int) -> ColumnElement[bool]:
    """Accounts that paid at least once, or were opened less than `weeks` weeks before `now`."""
    paid = exists().where(
        PAYMENTS.c.user_id == USERS.c.user_id,
        PAYMENTS.c.payment_type == PaymentType.payment,
        PAYMENTS.c.status == PaymentStatus.succeeded,
    )
    return or_(paid, USERS.c.created_at > now - timedelta(weeks=weeks))


async def welcome_for(uow: UnitOfWork, telegram_id: int, settings: BillingSettings) -> int:
    """The welcome credits a new account opens with: none during a creation burst."""
    limit = settings.welcome_burst_accounts
    if limit == 0 or settings.welcome_credits == 0:
        return settings.welcome_credits
    known = select(USERS.c.user_id).where(USERS.c.telegram_id == telegram_id)
    if (await uow.read(known)).first() is not None:
        return settings.welcome_credits  # not new: the upsert only refreshes its username
    since = func.now() - timedelta(seconds=settings.welcome_burst_window_s)
    recent = select(func.count()).select_from(USERS).where(USERS.c.created_at > since)
    opened = (await uow.read(recent)).scalar_one()
    if opened >= limit:
        log.warning(
            "account %s opens without welcome credits: %d opened in the last %.0f s",
            telegram_id,
            opened,
            settings.welcome_burst_window_s,
        )
        return 0
    return settings.welcome_credits
