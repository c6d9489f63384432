"""The bot's side behind the backend API in its tests: the gateway (moderation off: nothing
here uploads) with the fake Telegram Bot API it polls and sends to, and users seeded as the
gateway knows them."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from bot_gateway.app import Gateway
from bot_gateway.app import build as build_gateway
from bot_gateway.models import GatewayCredit, GatewayJob, GatewayUser
from contracts.topology import Topology
from moderation import ModerationSettings
from sandbox.telegram import TelegramSandbox
from support.gateway_harness import gateway_settings, new_user

if TYPE_CHECKING:
    from support.backend_harness import Running


@dataclass
class BotSide:
    gateway: Gateway
    telegram: TelegramSandbox


@asynccontextmanager
async def bot_side(
    database_url: str, amqp_url: str, topology: Topology, root: Path
) -> AsyncIterator[BotSide]:
    """The gateway, started, on the API's database and broker namespace."""
    telegram = TelegramSandbox()
    await telegram.start()
    try:
        gateway = build_gateway(
            gateway_settings(
                database_url,
                amqp_url,
                topology,
                telegram,
                root,
                moderation=ModerationSettings(enabled=False),
            )
        )
        async with gateway.app:
            yield BotSide(gateway, telegram)
    finally:
        await telegram.stop()


def bot(running: Running) -> BotSide:
    assert running.bot is not None
    return running.bot


def far_future() -> datetime:
    """A midnight long after every user seeded before it in this run (each test run has a
    database of its own) and after any real user: users seeded from it on are the calling
    test's own audience (`active_since`), however many the shared database holds."""
    return FUTURE + timedelta(days=1000 * next(_futures))


FUTURE = datetime(2200, 1, 1, tzinfo=UTC)
_futures = itertools.count()


async def seed_user(
    engine: AsyncEngine,
    *,
    language: str = "ru",
    joined: datetime,
    blocked: bool = False,
    paid: bool = False,
    asked_at: datetime | None = None,
) -> int:
    """A user as the gateway knows them (its own tables); their chat id."""
    telegram_id = new_user().id
    async with engine.begin() as connection:
        await connection.execute(
            insert(GatewayUser).values(
                telegram_id=telegram_id,
                user_id=random.randrange(1, 2**31 - 1),
                chat_id=telegram_id,
                language=language,
                blocked=blocked,
                created_at=joined,
                active_at=max(joined, asked_at or joined),  # as the gateway's request sets it
            )
        )
        if paid:
            await connection.execute(
                insert(GatewayCredit).values(
                    event_id=uuid.uuid4(),
                    telegram_id=telegram_id,
                    kind="topup",
                    credits=100,
                    balance=160,
                )
            )
        if asked_at is not None:
            await connection.execute(
                insert(GatewayJob).values(
                    request_id=uuid.uuid4(),
                    telegram_id=telegram_id,
                    user_id=1,
                    chat_id=telegram_id,
                    language=language,
                    title="test",
                    phase="done",
                    created_at=asked_at,
                )
            )
    return telegram_id
