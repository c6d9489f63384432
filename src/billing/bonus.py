"""The weekly bonus: at most once per account per ISO week, whatever the number of replicas.

The ledger key `bonus:<user>:<week>` is the guarantee; a transaction-scoped advisory lock only
keeps replicas from doing the same batch twice (the loser skips the round).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Select, String, exists, func, literal, select

from billing import accounts, farming, versions
from billing.accounts import LEDGER, USERS, Credit
from billing.domain import BONUS_KEY_PREFIX, LedgerKind, bonus_key, iso_week
from billing.models import PaymentType
from billing.settings import BillingSettings, BonusSettings
from contracts.events import WeeklyBonusGranted
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

LOCK = "billing.weekly_bonus"


def eligible(
    week: str,
    *,
    everyone: bool,
    threshold: int,
    limit: int,
    now: datetime | None = None,
    paymentless_weeks: int = 0,
) -> Select[tuple[int, int | None]]:
    """Accounts with a Telegram id (and, unless `everyone`, below `threshold` credits) still
    without this week's bonus: its ledger key, `bonus_key(user, week)`, built per row; with
    `paymentless_weeks`, an account that never paid only in its first weeks (farming.py)."""
    key = func.concat(BONUS_KEY_PREFIX, USERS.c.user_id, literal(f":{week}", String()))
    statement = select(USERS.c.user_id, USERS.c.telegram_id).where(
        USERS.c.telegram_id.is_not(None),
        USERS.c.balance.is_not(None),
        ~exists().where(LEDGER.c.idempotency_key == key),
    )
    if not everyone:
        statement = statement.where(USERS.c.balance < threshold)
    if paymentless_weeks and now is not None:
        statement = statement.where(farming.paid_or_new(now, paymentless_weeks))
    return statement.order_by(USERS.c.user_id).limit(limit)


class WeeklyBonus:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        bonus: BonusSettings,
        billing: BillingSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._unit_of_work = unit_of_work
        self._bonus = bonus
        self._billing = billing
        self._clock = clock

    async def run_once(self) -> int:
        """Grant this week's bonus to every eligible account still without it; how many got it."""
        if not self._bonus.enabled:
            return 0
        now = self._clock()
        week = iso_week(now, self._bonus.time_zone)
        granted = 0
        while True:
            async with self._unit_of_work() as uow:
                locked = await uow.execute(
                    select(func.pg_try_advisory_xact_lock(func.hashtext(LOCK)))
                )
                if not locked.scalar_one():
                    log.info("weekly bonus %s: another replica is granting; skipping", week)
                    return granted
                batch = eligible(
                    week,
                    everyone=self._bonus.eligibility == "all",
                    threshold=self._bonus.balance_threshold,
                    limit=self._bonus.batch_size,
                    now=now,
                    paymentless_weeks=self._bonus.paymentless_weeks,
                )
                users = (await uow.execute(batch)).all()
                for user_id, telegram_id in users:
                    granted += await self._grant(uow, user_id, telegram_id, week)
                await uow.commit()
            if len(users) < self._bonus.batch_size:
                if granted:
                    log.info("weekly bonus %s granted to %d accounts", week, granted)
                return granted

    async def _grant(self, uow: UnitOfWork, user_id: int, telegram_id: int, week: str) -> int:
        """This week's bonus for one account, with its `payments` row: one statement in the
        round's transaction; the event goes with the round's commit."""
        credits = self._bonus.credits
        grant = accounts.move(
            credits,
            bonus_key(user_id, week),
            LedgerKind.bonus,
            user_id=user_id,
            reason=f"weekly bonus {week}",
            credit=Credit(
                PaymentType.weekly_bonus,
                amount_kopecks=credits * self._billing.kopecks_per_credit,
                description=f"weekly bonus {week}",
            ),
        )
        moved = (await uow.execute(*grant)).first()
        if moved is None:
            return 0
        versions.emit(
            uow,
            WeeklyBonusGranted(
                user_id=user_id,
                telegram_id=telegram_id,
                amount=credits,
                balance=moved.balance_after,
                week=week,
                granted_at=self._clock(),
            ),
        )
        return 1
