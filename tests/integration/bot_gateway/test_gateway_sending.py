"""The outbound sender against a fake Bot API that enforces Telegram's limits: a 429 is waited
out and repeated, and a message whose sender died mid-send goes out again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot_gateway.limits import Lane, RateLimiter, sending_lane
from bot_gateway.rate_limited import RateLimitedRequests
from bot_gateway.repository import Mailbox, broadcast_statement
from bot_gateway.sender import OutboundSender
from bot_gateway.settings import DeliverySettings
from messaging.database import create_engine, create_session_factory
from messaging.settings import DatabaseSettings
from object_store import LocalObjectStore
from sandbox.telegram import TOKEN, TelegramSandbox
from support.database import DatabaseFactory, migrate
from support.gateway_harness import new_user


@pytest.fixture(scope="module")
async def own_sessions(
    databases: DatabaseFactory,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A database of this module's own: no other sender (the suite's gateway) claims its rows."""
    url = await databases.create("gateway_sending")
    await migrate(url)
    engine = create_engine(DatabaseSettings(url=url))  # type: ignore[arg-type]
    yield create_session_factory(engine)
    await engine.dispose()


def limited_bot(telegram: TelegramSandbox, chat_interval_s: float, chat_burst: int = 1) -> Bot:
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))
    limiter = RateLimiter(
        global_rate_per_s=29,
        chat_burst=chat_burst,
        chat_interval_s=chat_interval_s,
        group_interval_s=3,
    )
    bot.session.middleware(RateLimitedRequests(limiter, retry_after_tries=3))
    return bot


async def test_a_429_is_honoured_and_nothing_is_lost() -> None:
    telegram = TelegramSandbox(enforce_limits=True)
    await telegram.start()
    bot = limited_bot(telegram, chat_interval_s=0)  # a limiter that ignores the chat limit
    chat = new_user().id
    for n in range(7):  # a burst of 5 goes at once; the 6th and 7th are over the chat's limit
        await bot.send_message(chat, f"message {n}")
    await bot.session.close()
    await telegram.stop()
    assert telegram.http_429 >= 1  # Telegram refused some at first...
    delivered = [call.text for call in telegram.sent_to(chat, "sendMessage")]
    assert delivered == [f"message {n}" for n in range(7)]  # ...and all went, in order
    times = [call.at for call in telegram.sent_to(chat, "sendMessage")]
    assert times[6] - times[0] >= 1.9  # after the retry_after Telegram named


async def test_a_message_leased_by_a_dead_sender_goes_out_again(
    own_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    telegram = TelegramSandbox()
    await telegram.start()
    chat = new_user().id
    async with own_sessions() as session, session.begin():
        await Mailbox(session.execute).send(f"test:{chat}", chat, "text", {"text": "hi"})
        # a sender claimed it and died before marking it sent; its lease ran out
        await session.execute(
            text(
                "UPDATE gateway_outbound SET leased_until = now() - interval '1 second', "
                "attempts = 1 WHERE key = :key"
            ),
            {"key": f"test:{chat}"},
        )
    bot = limited_bot(telegram, chat_interval_s=1)
    sender = OutboundSender(own_sessions, bot, LocalObjectStore(tmp_path), DeliverySettings())
    assert await sender.deliver_pending() == 1
    assert [call.text for call in telegram.sent_to(chat)] == ["hi"]
    async with own_sessions() as session:
        sent_at = (
            await session.execute(
                text("SELECT sent_at FROM gateway_outbound WHERE key = :key"),
                {"key": f"test:{chat}"},
            )
        ).scalar_one()
    assert sent_at is not None
    assert await sender.deliver_pending() == 0  # sent and marked: never again
    await bot.session.close()
    await telegram.stop()


async def test_a_chat_waiting_for_its_slot_holds_up_no_other_chat(
    own_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """Chat A has 4 messages (1 s apart by Telegram's rule: 3 s); chat B's one message,
    committed while A's are going out, leaves at once, not after A's."""
    telegram = TelegramSandbox()
    await telegram.start()
    busy, other = new_user().id, new_user().id
    async with own_sessions() as session, session.begin():
        for n in range(4):
            await Mailbox(session.execute).send(
                f"busy:{busy}:{n}", busy, "text", {"text": f"busy {n}"}
            )
    bot = limited_bot(telegram, chat_interval_s=1)
    settings = DeliverySettings(poll_interval_s=0.05)
    sender = OutboundSender(own_sessions, bot, LocalObjectStore(tmp_path), settings)
    sender.start()
    try:
        await telegram.next_call(busy, 0, timeout_s=5)
        async with own_sessions() as session, session.begin():
            await Mailbox(session.execute).send(f"other:{other}", other, "text", {"text": "other"})
        committed = time.monotonic()
        sender.notify()
        assert await telegram.next_call(other, 0, timeout_s=5)
        assert time.monotonic() - committed < 0.5
        assert len(telegram.sent_to(busy)) < 4  # A was still waiting for its slots
        while len(telegram.sent_to(busy)) < 4:
            assert await telegram.next_call(busy, len(telegram.sent_to(busy)), timeout_s=5)
    finally:
        await sender.stop()
        await bot.session.close()
        await telegram.stop()
    assert [call.text for call in telegram.sent_to(busy)] == [f"busy {n}" for n in range(4)]


async def test_a_new_message_goes_before_an_edit_due_with_it(
    own_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """A job's result and its status message's last edit become due together: the result
    (what the user waits for) takes the chat's first slot, the edit of an older message the
    next one; the chat's messages still appear in order, as an edit changes one in place."""
    telegram = TelegramSandbox()
    await telegram.start()
    chat = new_user().id
    bot = limited_bot(telegram, chat_interval_s=0.2)
    status = await bot.send_message(chat, "queued")
    async with own_sessions() as session, session.begin():
        mailbox = Mailbox(session.execute)
        await mailbox.send(
            f"status:{chat}", chat, "edit", {"message_id": status.message_id, "text": "done"}
        )
        await mailbox.send(f"result:{chat}", chat, "text", {"text": "the result"})
        await mailbox.send(f"later:{chat}", chat, "text", {"text": "and then this"})
    sender = OutboundSender(own_sessions, bot, LocalObjectStore(tmp_path), DeliverySettings())
    assert await sender.deliver_pending() == 3
    await bot.session.close()
    await telegram.stop()
    calls = [(call.method, call.text) for call in telegram.sent_to(chat)]
    assert calls == [
        ("sendMessage", "queued"),
        ("sendMessage", "the result"),
        ("sendMessage", "and then this"),
        ("editMessageText", "done"),
    ]


async def test_a_broadcast_is_claimed_after_job_messages_and_sent_in_the_bulk_lane(
    own_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """Six broadcast rows are older than a job's result; with room for three in a claim, the
    result is among them, and each call went out in its row's lane."""
    telegram = TelegramSandbox()
    await telegram.start()
    listeners = [new_user().id for _ in range(6)]
    waiting = new_user().id
    async with own_sessions() as session, session.begin():
        for chat in listeners:
            await session.execute(
                text(
                    "INSERT INTO gateway_users (telegram_id, user_id, chat_id, language) "
                    "VALUES (:chat, 1, :chat, 'ru')"
                ),
                {"chat": chat},
            )
        mailed = (await session.execute(*broadcast_statement("lanes", "news"))).scalar_one()
        await Mailbox(session.execute).send(f"result:{waiting}", waiting, "text", {"text": "done"})
    assert mailed >= 6
    lanes: dict[int, Lane] = {}

    class Recording(RateLimiter):
        async def acquire(self, chat_id: int | None, lane: Lane | None = None) -> None:
            if chat_id is not None:
                lanes[chat_id] = sending_lane.get() if lane is None else lane
            await super().acquire(chat_id, lane)

    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)))
    limits = Recording(global_rate_per_s=29, chat_burst=5, chat_interval_s=1, group_interval_s=3)
    bot.session.middleware(RateLimitedRequests(limits, retry_after_tries=3))
    sender = OutboundSender(
        own_sessions, bot, LocalObjectStore(tmp_path), DeliverySettings(batch_size=3)
    )
    assert await sender.deliver_pending() == 3
    assert [call.text for call in telegram.sent_to(waiting)] == ["done"]
    while await sender.deliver_pending():
        pass
    await bot.session.close()
    await telegram.stop()
    assert all(telegram.sent_to(chat) for chat in listeners)
    assert lanes[waiting] == Lane.jobs
    assert {lanes[chat] for chat in listeners} == {Lane.bulk}
