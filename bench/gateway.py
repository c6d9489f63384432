"""A broadcast to 1,000 chats against a fake Bot API enforcing Telegram's limits (30/s per bot,
1/s per chat, 429 + retry_after beyond), beside a naive baseline.

The broadcast goes through the real path, end to end: the gateway runs as `imagebot run
bot_gateway` runs it (its `create_app`, configured from the environment, polling the sandbox
Telegram, on a throwaway database and broker namespace), an operator named in
TELEGRAM_ADMIN_IDS sends `/broadcast …` in the chat, and the gateway commits one mailbox row per
chat, which its outbound sender sends through its rate-limited `Bot` session and marks sent.
The chats are users the gateway knows already (rows in its `gateway_users`), so billing need
not run. The baseline, in the same run, sends the same number of messages with a plain `Bot` as
fast as 30 concurrent tasks go, to show what the limits do to a sender that ignores them.

Last line: `BENCH sent=… rate_per_s=… http_429=…` (the gateway's sender; target ≥ 28/s, 0).

    make bench-gateway          # or: python bench/gateway.py --chats 1000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import asyncpg  # noqa: E402
from aiogram import Bot  # noqa: E402
from aiogram.client.session.aiohttp import AiohttpSession  # noqa: E402
from aiogram.client.telegram import TelegramAPIServer  # noqa: E402
from aiogram.exceptions import TelegramRetryAfter  # noqa: E402

from bench.common import (  # noqa: E402
    amqp_url,
    configure,
    dsn,
    throwaway_database,
    throwaway_namespace,
)
from bot_gateway.app import create_app  # noqa: E402
from sandbox.telegram import TOKEN, TelegramSandbox, TgUser  # noqa: E402

FIRST_CHAT = 5_000_000_000
ADMIN = TgUser(id=7_000_000_001, first_name="Operator", language_code="en")
TEXT = "Новые пресеты уже в боте!"


def bot_for(telegram: TelegramSandbox) -> Bot:
    return Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))


async def baseline(chats: int) -> str:
    """No limiter: as fast as 30 tasks go; every 429 is a message Telegram refused."""
    telegram = TelegramSandbox(enforce_limits=True)
    await telegram.start()
    bot = bot_for(telegram)
    refused = 0
    targets = iter(range(FIRST_CHAT, FIRST_CHAT + chats))

    async def worker() -> None:
        nonlocal refused
        for chat_id in targets:
            try:
                await bot.send_message(chat_id, "hello")
            except TelegramRetryAfter:
                refused += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(30)))
    wall = time.perf_counter() - started
    await bot.session.close()
    await telegram.stop()
    delivered = chats - refused
    return (
        f"baseline (no limiter): attempted={chats} delivered={delivered} "
        f"http_429={telegram.http_429} wall_s={wall:.1f}"
    )


async def seed(database: str, chats: int) -> None:
    """The users the gateway knows (as if each had /start-ed the bot), and the operator."""
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            "INSERT INTO gateway_users (telegram_id, user_id, chat_id, language) "
            "SELECT $1::bigint + n, n + 1, $1::bigint + n, 'ru' FROM generate_series(0, $2 - 1) n",
            FIRST_CHAT,
            chats,
        )
        await connection.execute(
            "INSERT INTO gateway_users (telegram_id, user_id, chat_id, language) "
            "VALUES ($1, $2, $1, 'en')",
            ADMIN.id,
            chats + 1,
        )
    finally:
        await connection.close()


async def unsent(database: str) -> int:
    connection = await asyncpg.connect(database)
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM gateway_outbound WHERE sent_at IS NULL")
        )
    finally:
        await connection.close()


@dataclass
class GatewayRun:
    telegram: TelegramSandbox
    unsent: int = -1
    """Rows of the gateway's mailbox still unsent once it stopped (set then)."""


@asynccontextmanager
async def running_gateway(label: str, chats: int, **settings: str) -> AsyncIterator[GatewayRun]:
    """The gateway as `imagebot run bot_gateway` runs it, polling a sandbox Bot API that
    enforces Telegram's limits, on a throwaway database and broker namespace, with `chats`
    users it knows (and the operator); `settings` overrides its environment."""
    run = GatewayRun(TelegramSandbox(enforce_limits=True))
    await run.telegram.start()
    try:
        async with (
            throwaway_database(label) as url,
            throwaway_namespace(label) as topology,
        ):
            await seed(dsn(url), chats)
            with TemporaryDirectory() as objects:
                configure(
                    DATABASE_URL=url,
                    AMQP_URL=amqp_url(),
                    AMQP_NAMESPACE=topology.namespace,
                    TELEGRAM_BOT_TOKEN=TOKEN,
                    TELEGRAM_API_URL=run.telegram.base_url,
                    TELEGRAM_MODE="polling",
                    TELEGRAM_POLLING_TIMEOUT_S="1",
                    TELEGRAM_ADMIN_IDS=str(ADMIN.id),
                    STORAGE_BACKEND="local",
                    STORAGE_LOCAL_ROOT=objects,
                    SERVICE_GRACEFUL_TIMEOUT_S="5",
                    **settings,
                )
                async with create_app():
                    yield run
            run.unsent = await unsent(dsn(url))
    finally:
        await run.telegram.stop()


async def broadcast(chats: int) -> tuple[str, str]:
    targets = set(range(FIRST_CHAT, FIRST_CHAT + chats))
    async with running_gateway("gateway", chats) as run:
        telegram = run.telegram
        telegram.say(ADMIN, f"/broadcast {TEXT}")
        reply = await telegram.wait_for(
            ADMIN.id, "Broadcast queued", method="sendMessage", timeout_s=60
        )
        found = re.search(r"\d+", reply.text)
        queued = int(found.group()) if found else 0
        deadline = time.monotonic() + chats / 20 + 60
        for chat in targets:  # each chat's first call is its broadcast message
            if not await telegram.next_call(chat, 0, deadline - time.monotonic()):
                break
    left = run.unsent
    times = sorted(
        call.at
        for call in telegram.calls
        if call.method == "sendMessage" and call.chat_id in targets
    )
    span = times[-1] - times[0] if times else 0.0
    rate = (len(times) - 1) / span if span > 0 else 0.0
    detail = (
        f"gateway sender: queued={queued} (the operator too) delivered={len(times)} "
        f"unsent_rows={left} span_s={span:.1f} limit=30/s"
    )
    if len(times) != chats or left or queued != chats + 1:
        raise SystemExit(f"{detail}\nthe broadcast did not reach every chat")
    return detail, f"BENCH sent={len(times)} rate_per_s={rate:.1f} http_429={telegram.http_429}"


async def main(chats: int) -> None:
    print(await baseline(chats), flush=True)
    detail, result = await broadcast(chats)
    print(detail, flush=True)
    print(result, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1000, help="chats the broadcast reaches")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.disable(logging.INFO)  # FastStream logs a line per message
    asyncio.run(main(arguments.chats))
