"""What the gateway knows of one user, for the operators' profile (a read the backend API asks
for): their language (chosen in the menu, else Telegram's), the `/start` source they first came
with and when, when the bot first saw them, whether they blocked it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot_gateway.models import GatewayUser
from contracts.rpc import GatewayProfile, GetGatewayProfile
from messaging.runtime import ServiceRuntime


class UserProfiles:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def profile(self, request: GetGatewayProfile) -> GatewayProfile:
        async with self._sessions() as session:
            user = await session.scalar(
                select(GatewayUser).where(GatewayUser.telegram_id == request.telegram_id)
            )
        if user is None:  # an account the bot never talked to (an adopted database's)
            return GatewayProfile(telegram_id=request.telegram_id, known=False)
        return GatewayProfile(
            telegram_id=request.telegram_id,
            known=True,
            language=user.language,
            chosen_language=user.chosen_language,
            source=user.source,
            source_at=user.source_at,
            first_seen=user.created_at,
            blocked=user.blocked,
        )


def register(runtime: ServiceRuntime) -> None:
    runtime.serve(GetGatewayProfile, UserProfiles(runtime.sessions).profile)
