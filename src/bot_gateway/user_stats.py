"""The dashboard's users (a read the backend API asks for): how many, new per day, active
within 1, 7 and 30 days (joined, or asked for an image), and by the `/start` source they first
came with. Aggregates over the gateway's own tables, by UTC day."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot_gateway.models import GatewayUser
from contracts.rpc import CountUsers, DayCount, SourceCount, UserStats
from messaging.runtime import ServiceRuntime


def utc_day(column: Any) -> Any:
    return cast(func.timezone("UTC", column), Date)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


class UserCounts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def count(self, request: CountUsers) -> UserStats:
        now = datetime.now(UTC)
        first_day = now.date() - timedelta(days=request.days - 1)
        day = utc_day(GatewayUser.created_at)
        async with self._sessions() as session:
            users, blocked = (
                await session.execute(
                    select(func.count(), func.count().filter(GatewayUser.blocked))
                )
            ).one()
            new: dict[date, int] = dict(
                (
                    await session.execute(
                        select(day, func.count())
                        .where(GatewayUser.created_at >= _midnight(first_day))
                        .group_by(day)
                    )
                ).all()
            )
            active = [
                await self._active(session, now - timedelta(days=days)) for days in (1, 7, 30)
            ]
            sources = (
                await session.execute(
                    select(GatewayUser.source, func.count().label("users"))
                    .group_by(GatewayUser.source)
                    .order_by(func.count().desc(), GatewayUser.source)
                    .limit(request.sources)
                )
            ).all()
        return UserStats(
            users=int(users),
            blocked=int(blocked),
            new_per_day=[
                DayCount(day=day, count=int(new.get(day, 0)))
                for day in (first_day + timedelta(days=offset) for offset in range(request.days))
            ],
            active_1d=active[0],
            active_7d=active[1],
            active_30d=active[2],
            sources=[SourceCount(source=source, users=int(count)) for source, count in sources],
        )

    async def _active(self, session: AsyncSession, since: datetime) -> int:
        """Users who joined or asked for an image since `since` (`active_at`, indexed)."""
        active = select(func.count()).where(GatewayUser.active_at >= since)
        return int(await session.scalar(active) or 0)


def register(runtime: ServiceRuntime) -> None:
    runtime.serve(CountUsers, UserCounts(runtime.sessions).count)
