"""Free credits are not farmed: an account that never paid gets the weekly bonus only in its
first weeks, accounts opened in a burst open without welcome credits, and an account reported
for uploads shared with many others gets no weekly bonus until it pays; the signals as the panel
sees them (billing/farming.py). Each test on a database of its own, since a burst counts every
account opened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import farming, services
from billing.bonus import WeeklyBonus
from billing.models import DELIVERY
from billing.settings import BillingSettings, BonusSettings
from contracts.events import SharedUploadSeen
from contracts.rpc import FarmingSignals, GetFarmingSignals
from messaging.unit_of_work import UnitOfWork
from support.billing_harness import execute, new_telegram_id, open_account, scalar
from support.database import DatabaseFactory, engine_at, migrate


@pytest.fixture
async def engine(databases: DatabaseFactory) -> AsyncIterator[AsyncEngine]:
    url = await databases.create("farming")
    await migrate(url)
    async with engine_at(url) as engine:
        yield engine


def weekly(engine: AsyncEngine, bonus: BonusSettings, now: datetime) -> WeeklyBonus:
    return WeeklyBonus(
        lambda: UnitOfWork(engine, DELIVERY, source="test"), bonus, BillingSettings(), lambda: now
    )


async def bonused(engine: AsyncEngine) -> set[int]:
    rows = await scalar(
        engine,
        "SELECT coalesce(array_agg(user_id), '{}') FROM billing_ledger WHERE kind = 'bonus'",
    )
    return set(rows)


async def test_an_account_that_never_paid_gets_the_weekly_bonus_only_in_its_first_weeks(
    engine: AsyncEngine,
) -> None:
    new, _ = await open_account(engine, balance=0)
    old, _ = await open_account(engine, balance=0)
    payer, _ = await open_account(engine, balance=0)
    await execute(
        engine,
        "UPDATE users SET created_at = now() - interval '10 weeks' WHERE user_id IN (:a, :b)",
        a=old,
        b=payer,
    )
    await execute(
        engine,
        "INSERT INTO payments (user_id, amount, status, payment_type) "
        "VALUES (:user_id, 10000, 'succeeded', 'payment')",
        user_id=payer,
    )
    now = datetime.now(UTC)
    assert await weekly(engine, BonusSettings(paymentless_weeks=4), now).run_once() == 2
    assert await bonused(engine) == {new, payer}
    next_week = now + timedelta(weeks=1)  # no limit: the old payment-less account too
    assert await weekly(engine, BonusSettings(paymentless_weeks=0), next_week).run_once() == 3
    assert await bonused(engine) == {new, old, payer}


async def test_accounts_opened_in_a_burst_open_without_welcome_credits(
    engine: AsyncEngine,
) -> None:
    settings = BillingSettings(welcome_burst_accounts=3, welcome_burst_window_s=600)

    async def opened(telegram_id: int, rules: BillingSettings = settings) -> int:
        async with UnitOfWork(engine, DELIVERY, source="test") as uow:
            welcome = await farming.welcome_for(uow, telegram_id, rules)
            account = await services.ensure_account(uow, telegram_id, "farmer", welcome)
        return account.balance

    first, *more = [new_telegram_id() for _ in range(5)]
    assert [await opened(first), await opened(more[0]), await opened(more[1])] == [60, 60, 60]
    assert await opened(more[2]) == 0  # the fourth within the window
    assert await opened(first) == 60  # a known account is only refreshed
    welcomes = "SELECT count(*) FROM billing_ledger WHERE kind = 'welcome'"
    assert await scalar(engine, welcomes) == 3
    assert await opened(more[3], BillingSettings()) == 60  # the rule off (the default)
    await execute(engine, "UPDATE users SET created_at = now() - interval '1 hour'")
    assert await opened(new_telegram_id()) == 60  # the burst is over


async def test_an_account_flagged_for_shared_uploads_gets_no_weekly_bonus_until_it_pays(
    engine: AsyncEngine,
) -> None:
    clean, _ = await open_account(engine, balance=0)
    _, sharer_telegram = await open_account(engine, balance=0)
    payer, payer_telegram = await open_account(engine, balance=0)
    for telegram_id, accounts in ((sharer_telegram, 3), (payer_telegram, 3), (sharer_telegram, 2)):
        async with UnitOfWork(engine, DELIVERY, source="test") as uow:
            seen = SharedUploadSeen(telegram_id=telegram_id, accounts=accounts, digest="ab" * 32)
            await farming.flag_shared_upload(seen, uow)
            await uow.commit()
    flags = "SELECT shared_upload_accounts FROM billing_farming_flags WHERE telegram_id = :t"
    assert await scalar(engine, flags, t=sharer_telegram) == 3  # the most reported stays
    await execute(
        engine,
        "INSERT INTO payments (user_id, amount, status, payment_type) "
        "VALUES (:user_id, 10000, 'succeeded', 'payment')",
        user_id=payer,
    )
    now = datetime.now(UTC)
    bonus = BonusSettings(paymentless_weeks=4)
    assert await weekly(engine, bonus, now).run_once() == 2
    assert await bonused(engine) == {clean, payer}  # new, but flagged: not the sharer

    async def signals(telegram_id: int) -> FarmingSignals:
        async with UnitOfWork(engine, DELIVERY, source="test") as uow:
            request = GetFarmingSignals(telegram_id=telegram_id)
            return await farming.farming_signals(uow, request, BillingSettings(), bonus, now)

    flagged = await signals(sharer_telegram)
    assert (flagged.known, flagged.paid, flagged.shared_upload_accounts) == (True, False, 3)
    assert (flagged.account_age_days, flagged.welcome_withheld) == (0, False)
    assert flagged.weekly_bonus_eligible is False
    paying = await signals(payer_telegram)
    assert (paying.paid, paying.shared_upload_accounts, paying.weekly_bonus_eligible) == (
        True,
        3,
        True,
    )
    assert (await signals(new_telegram_id())).known is False


async def test_an_account_opened_in_a_burst_shows_its_welcome_withheld(
    engine: AsyncEngine,
) -> None:
    _, telegram_id = await open_account(engine, balance=0, welcome=0)
    async with UnitOfWork(engine, DELIVERY, source="test") as uow:
        found = await farming.farming_signals(
            uow,
            GetFarmingSignals(telegram_id=telegram_id),
            BillingSettings(),
            BonusSettings(),
            datetime.now(UTC),
        )
    assert (found.welcome_withheld, found.weekly_bonus_eligible) == (True, True)
