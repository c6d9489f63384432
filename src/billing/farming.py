"""Free credits are not farmed: the signals billing can see limit the welcome and weekly bonuses
(shared devices are invisible to a bot; accounts that never pay and accounts opened in a burst
are not).

- An account that never paid (no succeeded payment) gets the weekly bonus only in its first
  `BONUS_PAYMENTLESS_WEEKS` weeks; paying once restores it for good.
- While `BILLING_WELCOME_BURST_ACCOUNTS` or more accounts were opened within
  `BILLING_WELCOME_BURST_WINDOW_S`, a new account opens without welcome credits (logged).
- An account the gateway reports uploading the same picture as many other accounts
  (SharedUploadSeen: `MODERATION_SHARED_UPLOAD_ACCOUNTS`) is flagged (`billing_farming_flags`):
  while it never paid, it gets no weekly bonus even in its first weeks (with the payment-less
  rule on, as by default); paying once restores it.

`farming_signals` answers the backend API's question (the panel's profile): each signal as
billing sees it for one account.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, Table, and_, exists, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from billing.accounts import LEDGER, PAYMENTS, USERS
from billing.domain import LedgerKind
from billing.models import FarmingFlag, PaymentStatus, PaymentType
from billing.settings import BillingSettings, BonusSettings
from contracts.events import SharedUploadSeen
from contracts.rpc import FarmingSignals, GetFarmingSignals
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

FLAGS = cast("Table", FarmingFlag.__table__)

log = logging.getLogger(__name__)


def _paid() -> ColumnElement[bool]:
    return exists().where(
        PAYMENTS.c.user_id == USERS.c.user_id,
        PAYMENTS.c.payment_type == PaymentType.payment,
        PAYMENTS.c.status == PaymentStatus.succeeded,
    )


def _flagged() -> ColumnElement[bool]:
    return exists().where(FLAGS.c.telegram_id == USERS.c.telegram_id)


def paid_or_new(now: datetime, weeks: int) -> ColumnElement[bool]:
    """Accounts that paid at least once, or were opened less than `weeks` weeks before `now`
    and are not flagged for shared uploads."""
    return or_(_paid(), and_(USERS.c.created_at > now - timedelta(weeks=weeks), ~_flagged()))


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


async def flag_shared_upload(event: SharedUploadSeen, uow: UnitOfWork) -> None:
    """Remember the account as sharing uploads (the most accounts reported for it)."""
    statement = insert(FLAGS).values(
        telegram_id=event.telegram_id, shared_upload_accounts=event.accounts
    )
    await uow.execute(
        statement.on_conflict_do_update(
            index_elements=[FLAGS.c.telegram_id],
            set_={
                "shared_upload_accounts": func.greatest(
                    FLAGS.c.shared_upload_accounts, statement.excluded.shared_upload_accounts
                )
            },
        )
    )
    log.warning(
        "account %s flagged: an upload shared by %d accounts", event.telegram_id, event.accounts
    )


async def farming_signals(
    uow: UnitOfWork,
    request: GetFarmingSignals,
    billing: BillingSettings,
    bonus: BonusSettings,
    now: datetime,
) -> FarmingSignals:
    """Each signal as billing sees it for one account, and whether the weekly bonus reaches it."""
    welcomed = exists().where(
        LEDGER.c.user_id == USERS.c.user_id,
        LEDGER.c.kind.in_((LedgerKind.welcome.value, LedgerKind.opening.value)),
    )
    found = (
        await uow.read(
            select(
                USERS.c.created_at,
                _paid().label("paid"),
                welcomed.label("welcomed"),
                select(FLAGS.c.shared_upload_accounts)
                .where(FLAGS.c.telegram_id == USERS.c.telegram_id)
                .scalar_subquery()
                .label("shared"),
            ).where(USERS.c.telegram_id == request.telegram_id)
        )
    ).first()
    if found is None:
        return FarmingSignals(
            telegram_id=request.telegram_id,
            known=False,
            paid=False,
            account_age_days=None,
            welcome_withheld=False,
            shared_upload_accounts=0,
            weekly_bonus_eligible=False,
        )
    age = now - found.created_at if found.created_at is not None else None
    shared = int(found.shared or 0)
    new = age is not None and age < timedelta(weeks=bonus.paymentless_weeks)
    return FarmingSignals(
        telegram_id=request.telegram_id,
        known=True,
        paid=bool(found.paid),
        account_age_days=max(age.days, 0) if age is not None else None,
        welcome_withheld=billing.welcome_credits > 0 and not found.welcomed,
        shared_upload_accounts=shared,
        weekly_bonus_eligible=(
            bool(found.paid) or bonus.paymentless_weeks == 0 or (new and shared == 0)
        ),
    )


def register(runtime: ServiceRuntime, billing: BillingSettings, bonus: BonusSettings) -> None:
    """The gateway's shared-upload reports, and the backend API's question."""
    runtime.consumer.on(SharedUploadSeen)(flag_shared_upload)

    async def signals(request: GetFarmingSignals) -> FarmingSignals:
        async with runtime.unit_of_work() as uow:
            return await farming_signals(uow, request, billing, bonus, datetime.now(UTC))

    runtime.serve(GetFarmingSignals, signals)
