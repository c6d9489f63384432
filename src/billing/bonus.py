"""The weekly bonus: at most once per account per ISO week, whatever the number of replicas.

The ledger key `bonus:<user>:<week>` is the guarantee; a transaction-scoped advisory lock only
keeps replicas from doing the same batch twice (the loser skips the round).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import text

from billing import accounts, payments
from billing.domain import LedgerKind, bonus_key, iso_week
from billing.settings import BillingSettings, BonusSettings
from contracts.events import WeeklyBonusGranted
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

_ELIGIBLE = text(
    """
    SELECT u.user_id FROM users u
    WHERE u.telegram_id IS NOT NULL AND u.balance IS NOT NULL
      AND (:everyone OR u.balance < :threshold)
      AND NOT EXISTS (SELECT 1 FROM billing_ledger l
                      WHERE l.idempotency_key = 'bonus:' || u.user_id || ':' || :week)
    ORDER BY u.user_id LIMIT :limit
    """
)


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
        week = iso_week(self._clock(), self._bonus.time_zone)
        granted = 0
        while True:
            async with self._unit_of_work() as uow:
                locked = await uow.session.execute(
                    text("SELECT pg_try_advisory_xact_lock(hashtext('billing.weekly_bonus'))")
                )
                if not locked.scalar_one():
                    log.info("weekly bonus %s: another replica is granting; skipping", week)
                    return granted
                users = (
                    (
                        await uow.session.execute(
                            _ELIGIBLE,
                            {
                                "everyone": self._bonus.eligibility == "all",
                                "threshold": self._bonus.balance_threshold,
                                "week": week,
                                "limit": self._bonus.batch_size,
                            },
                        )
                    )
                    .scalars()
                    .all()
                )
                for user_id in users:
                    granted += await self._grant(uow, int(user_id), week)
                await uow.commit()
            if len(users) < self._bonus.batch_size:
                if granted:
                    log.info("weekly bonus %s granted to %d accounts", week, granted)
                return granted

    async def _grant(self, uow: UnitOfWork, user_id: int, week: str) -> int:
        credits = self._bonus.credits
        moved = await accounts.move(
            uow.session,
            user_id=user_id,
            amount=credits,
            key=bonus_key(user_id, week),
            kind=LedgerKind.bonus,
            reason=f"weekly bonus {week}",
        )
        if moved is None or moved.telegram_id is None:
            return 0
        await payments.record_credit(
            uow.session,
            user_id=user_id,
            kind="weekly_bonus",
            amount_kopecks=credits * self._billing.kopecks_per_credit,
            description=f"weekly bonus {week}",
        )
        uow.emit(
            WeeklyBonusGranted(
                user_id=user_id,
                telegram_id=moved.telegram_id,
                amount=credits,
                balance=moved.balance,
                week=week,
                granted_at=self._clock(),
            )
        )
        return 1
