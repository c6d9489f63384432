"""The dashboard's money (a read the backend API asks for): revenue and refunds per UTC day and
currency (kopecks for rubles, Stars for XTR), and what the weekly bonus cost in credits per ISO
week. Aggregates over billing's own `payments` and ledger."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.models import LedgerEntry, Payment, PaymentStatus, PaymentType
from contracts.rpc import BonusWeek, CountMoney, MoneyDay, MoneyStats
from messaging.runtime import ServiceRuntime


def utc_day(moment: Any) -> Any:
    return cast(func.timezone("UTC", moment), Date)


class MoneyCounts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def count(self, request: CountMoney) -> MoneyStats:
        first_day = datetime.now(UTC).date() - timedelta(days=request.days - 1)
        since = datetime.combine(first_day, time.min, UTC)
        moment = func.coalesce(Payment.paid_at, Payment.created_at)
        day = utc_day(moment)
        currency = func.coalesce(Payment.currency, "RUB")
        refund = Payment.payment_type == PaymentType.refund
        paid = or_(Payment.payment_type == PaymentType.payment, Payment.payment_type.is_(None))
        amount = func.coalesce(Payment.amount, 0)
        week = cast(func.date_trunc("week", func.timezone("UTC", LedgerEntry.created_at)), Date)
        async with self._sessions() as session:
            days = (
                await session.execute(
                    select(
                        day,
                        currency,
                        func.coalesce(func.sum(amount).filter(paid), 0),
                        func.count().filter(paid),
                        func.coalesce(func.sum(amount).filter(refund), 0),
                    )
                    .where(
                        Payment.status == PaymentStatus.succeeded,
                        moment >= since,
                        or_(paid, refund),
                    )
                    .group_by(day, currency)
                    .order_by(day, currency)
                )
            ).all()
            weeks = (
                await session.execute(
                    select(
                        week,
                        func.count(func.distinct(LedgerEntry.user_id)),
                        func.coalesce(func.sum(LedgerEntry.amount), 0),
                    )
                    .where(LedgerEntry.kind == "bonus", LedgerEntry.created_at >= since)
                    .group_by(week)
                    .order_by(week)
                )
            ).all()
        return MoneyStats(
            days=[
                MoneyDay(
                    day=when,
                    currency=code,
                    revenue=int(revenue),
                    payments=int(payments),
                    refunds=int(refunds),
                )
                for when, code, revenue, payments, refunds in days
            ],
            bonus_weeks=[
                BonusWeek(week=monday, users=int(users), credits=int(credits))
                for monday, users, credits in weeks
            ],
        )


def register(runtime: ServiceRuntime) -> None:
    runtime.serve(CountMoney, MoneyCounts(runtime.sessions).count)
