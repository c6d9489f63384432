"""A broadcast of 1,000 messages to 1,000 chats against a fake Bot API enforcing Telegram's
limits (30/s per bot, 1/s per chat, 429 + retry_after beyond), beside a naive baseline.

The broadcast goes through the real path: `/broadcast`'s use case commits one mailbox row per
chat, the gateway's outbound sender claims and sends them through the rate-limited session of
a real aiogram `Bot`, and marks them sent. The baseline, in the same run, sends the same number
of messages with a plain `Bot` as fast as 30 concurrent tasks go, to show what the limits do to
a sender that ignores them. The database is a throwaway one created (and dropped) here.

Last line: `BENCH sent=… rate_per_s=… http_429=…` (the gateway's sender; target ≥ 28/s, 0).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from aiogram import Bot  # noqa: E402
from aiogram.client.session.aiohttp import AiohttpSession  # noqa: E402
from aiogram.client.telegram import TelegramAPIServer  # noqa: E402
from aiogram.exceptions import TelegramRetryAfter  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from bot_gateway.conversation import Conversation  # noqa: E402
from bot_gateway.limits import RateLimiter  # noqa: E402
from bot_gateway.models import DELIVERY, GatewayUser  # noqa: E402
from bot_gateway.rate_limited import RateLimitedRequests  # noqa: E402
from bot_gateway.sender import OutboundSender  # noqa: E402
from bot_gateway.settings import DeliverySettings  # noqa: E402
from bot_gateway.storage import LocalObjectStore  # noqa: E402
from messaging.database import create_engine, create_session_factory  # noqa: E402
from messaging.settings import DatabaseSettings  # noqa: E402
from messaging.unit_of_work import UnitOfWork  # noqa: E402
from sandbox.telegram import TOKEN, TelegramSandbox  # noqa: E402
from support.database import DatabaseFactory, migrate  # noqa: E402

CHATS = 1_000
FIRST_CHAT = 5_000_000_000


def bot_for(telegram: TelegramSandbox) -> Bot:
    return Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))


async def baseline() -> str:
    """No limiter: as fast as 30 tasks go; every 429 is a message Telegram refused."""
    telegram = TelegramSandbox(enforce_limits=True)
    await telegram.start()
    bot = bot_for(telegram)
    refused = 0
    chats = iter(range(FIRST_CHAT, FIRST_CHAT + CHATS))

    async def worker() -> None:
        nonlocal refused
        for chat_id in chats:
            try:
                await bot.send_message(chat_id, "hello")
            except TelegramRetryAfter:
                refused += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(30)))
    wall = time.perf_counter() - started
    await bot.session.close()
    await telegram.stop()
    delivered = CHATS - refused
    return (
        f"baseline (no limiter): attempted={CHATS} delivered={delivered} "
        f"http_429={telegram.http_429} wall_s={wall:.1f}"
    )


async def broadcast(database_url: str) -> tuple[str, str]:
    telegram = TelegramSandbox(enforce_limits=True)
    await telegram.start()
    engine = create_engine(DatabaseSettings(url=database_url))  # type: ignore[arg-type]
    sessions = create_session_factory(engine)
    async with engine.begin() as connection:
        await connection.execute(
            insert(GatewayUser),
            [
                {"telegram_id": chat, "user_id": n + 1, "chat_id": chat, "language": "ru"}
                for n, chat in enumerate(range(FIRST_CHAT, FIRST_CHAT + CHATS))
            ],
        )
    settings = DeliverySettings()
    bot = bot_for(telegram)
    limiter = RateLimiter(
        global_rate_per_s=settings.global_rate_per_s,
        chat_interval_s=settings.chat_interval_s,
        group_interval_s=settings.group_interval_s,
    )
    bot.session.middleware(RateLimitedRequests(limiter, retry_after_tries=5))
    with TemporaryDirectory() as store:
        sender = OutboundSender(sessions, bot, LocalObjectStore(Path(store)), settings)
        conversation = Conversation(
            lambda: UnitOfWork(sessions, DELIVERY, source="bench"),
            edit_interval_s=settings.edit_interval_s,
            mail_committed=sender.notify,
        )
        sender.start()
        queued = await conversation.broadcast("Новые пресеты уже в боте!")
        while len(telegram.calls) < queued:  # noqa: ASYNC110  (the fake server counts)
            await asyncio.sleep(0.05)
        await sender.stop()
    async with sessions() as session:
        unsent = (
            await session.execute(
                text("SELECT count(*) FROM gateway_outbound WHERE sent_at IS NULL")
            )
        ).scalar_one()
    times = [call.at for call in telegram.calls if call.method == "sendMessage"]
    span = max(times) - min(times)
    rate = (len(times) - 1) / span if span > 0 else float("inf")
    await bot.session.close()
    await telegram.stop()
    await engine.dispose()
    detail = (
        f"gateway sender: queued={queued} delivered={len(times)} unsent_rows={unsent} "
        f"span_s={span:.1f} limit=30/s"
    )
    return detail, f"BENCH sent={len(times)} rate_per_s={rate:.1f} http_429={telegram.http_429}"


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    print(await baseline(), flush=True)
    databases = DatabaseFactory(
        DatabaseSettings(
            url=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")  # type: ignore[arg-type]
        ).url.get_secret_value()
    )
    try:
        url = await databases.create("bench_gateway")
        await migrate(url)
        detail, result = await broadcast(url)
    finally:
        await databases.drop_all()
    print(detail, flush=True)
    print(result, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
