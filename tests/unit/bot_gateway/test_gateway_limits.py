"""The rate limiter's spacing, per-chat intervals and 429 pauses, on the real event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import GetMe, SendMessage

from bot_gateway.limits import RateLimiter
from bot_gateway.rate_limited import RateLimitedRequests

TOKEN = "42:unit-test-token"


async def stamps(limiter: RateLimiter, chats: list[int | None]) -> list[float]:
    started = time.monotonic()
    taken: list[float] = []

    async def take(chat: int | None) -> None:
        await limiter.acquire(chat)
        taken.append(time.monotonic() - started)

    await asyncio.gather(*(take(chat) for chat in chats))
    return sorted(taken)


def limiter(rate: float = 100.0, chat_s: float = 0.1, group_s: float = 0.3) -> RateLimiter:
    return RateLimiter(global_rate_per_s=rate, chat_interval_s=chat_s, group_interval_s=group_s)


async def test_global_slots_are_evenly_spaced() -> None:
    taken = await stamps(limiter(rate=100), list(range(1, 21)))
    # 100/s: the k-th call never goes before its slot k × 10 ms (a late wake-up only delays)
    early = [(k, at) for k, at in enumerate(taken) if at < k * 0.01 - 0.002]
    assert early == []


async def test_one_chat_waits_its_interval_and_others_do_not_wait_for_it() -> None:
    taken = await stamps(limiter(chat_s=0.1), [7, 7, 7, 8, 9])
    assert taken[-1] >= 0.19  # the third message into chat 7
    assert taken[2] < 0.09  # chats 8 and 9 did not wait for chat 7's interval


async def test_groups_wait_longer() -> None:
    taken = await stamps(limiter(group_s=0.2), [-100, -100])
    assert taken[1] >= 0.19


async def test_a_pause_holds_back_that_chat() -> None:
    limits = limiter()
    limits.pause(5, 0.2)
    taken = await stamps(limits, [5, 6])
    assert taken[0] < 0.15
    assert taken[1] >= 0.19


async def test_a_429_is_waited_out_and_the_call_repeated() -> None:
    limits = limiter()
    middleware = RateLimitedRequests(limits, retry_after_tries=2)
    bot = Bot(TOKEN)
    method = SendMessage(chat_id=11, text="hi")
    calls: list[float] = []

    async def make_request(bot: Bot, method: Any) -> Any:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise TelegramRetryAfter(method=method, message="Too Many Requests", retry_after=1)
        return "sent"

    assert await middleware(make_request, bot, method) == "sent"  # type: ignore[arg-type]
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.95
    assert await middleware(make_request, bot, GetMe()) == "sent"  # type: ignore[arg-type]
    await bot.session.close()
