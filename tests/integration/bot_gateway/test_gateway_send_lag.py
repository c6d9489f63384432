"""The sender's lag histogram: from when a message was due to Telegram's answer."""

from __future__ import annotations

from pathlib import Path

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from prometheus_client import REGISTRY
from sqlalchemy import text

from bot_gateway.repository import Mailbox
from bot_gateway.sender import OutboundSender
from bot_gateway.settings import DeliverySettings
from messaging.database import create_engine, create_session_factory
from messaging.settings import DatabaseSettings
from object_store import LocalObjectStore
from sandbox.telegram import TOKEN, TelegramSandbox
from support.database import DatabaseFactory, migrate
from support.gateway_harness import new_user


def lag(sample: str) -> float:
    return (
        REGISTRY.get_sample_value(f"imagebot_telegram_send_lag_seconds_{sample}", {"kind": "text"})
        or 0.0
    )


async def test_a_message_due_a_minute_ago_is_observed_a_minute_late(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    url = await databases.create("gateway_send_lag")  # no other sender claims its rows
    await migrate(url)
    engine = create_engine(DatabaseSettings(url=url))  # type: ignore[arg-type]
    sessions = create_session_factory(engine)
    telegram = TelegramSandbox()
    await telegram.start()
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))
    chat = new_user().id
    try:
        async with sessions() as session, session.begin():
            await Mailbox(session.execute).send(f"lag:{chat}", chat, "text", {"text": "late"})
            await session.execute(
                text("UPDATE gateway_outbound SET not_before = now() - interval '60 seconds'")
            )
        count, total = lag("count"), lag("sum")
        sender = OutboundSender(sessions, bot, LocalObjectStore(tmp_path), DeliverySettings())
        assert await sender.deliver_pending() == 1
        assert [call.text for call in telegram.sent_to(chat)] == ["late"]
        assert lag("count") - count == 1
        assert lag("sum") - total >= 60
    finally:
        await bot.session.close()
        await telegram.stop()
        await engine.dispose()
