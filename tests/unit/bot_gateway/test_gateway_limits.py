"""The rate limiter's spacing, per-chat intervals and 429 pauses, on the real event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import GetMe, SendMessage

from bot_gateway.limits import Lane, RateLimiter
from bot_gateway.rate_limited import RateLimitedRequests
from bot_gateway.settings import ConversationSettings
from bot_gateway.throttling import FloodGuard, Verdict

TOKEN = "42:unit-test-token"


async def stamps(
    limiter: RateLimiter, chats: list[int | None], lanes: list[Lane] | None = None
) -> list[float]:
    """When each call got its slot (in the order of `chats`), seconds after the start."""
    started = time.monotonic()
    taken = [0.0] * len(chats)

    async def take(n: int, chat: int | None, lane: Lane) -> None:
        await limiter.acquire(chat, lane)
        taken[n] = time.monotonic() - started

    lanes = lanes or [Lane.reply] * len(chats)
    await asyncio.gather(
        *(take(n, chat, lane) for n, (chat, lane) in enumerate(zip(chats, lanes, strict=True)))
    )
    return taken


def limiter(
    rate: float = 100.0, burst: int = 1, chat_s: float = 0.1, group_s: float = 0.3
) -> RateLimiter:
    return RateLimiter(
        global_rate_per_s=rate, chat_burst=burst, chat_interval_s=chat_s, group_interval_s=group_s
    )


async def test_global_slots_are_evenly_spaced() -> None:
    taken = sorted(await stamps(limiter(rate=100), list(range(1, 21))))
    # 100/s: the k-th call never goes before its slot k × 10 ms (a late wake-up only delays)
    early = [(k, at) for k, at in enumerate(taken) if at < k * 0.01 - 0.002]
    assert early == []


async def test_a_reply_takes_the_next_slot_before_waiting_broadcasts() -> None:
    """20 broadcast messages wait for slots (10/s); a reply asked for later goes next."""
    limits = limiter(rate=10)
    bulk = asyncio.gather(*(limits.acquire(chat, Lane.bulk) for chat in range(100, 120)))
    await asyncio.sleep(0.25)  # three or so broadcast slots gone; the rest wait
    asked = time.monotonic()
    await limits.acquire(7, Lane.reply)
    waited = time.monotonic() - asked
    await limits.acquire(8, Lane.jobs)
    assert not bulk.done()  # the reply and the job message went before the waiting broadcast
    assert waited <= 0.15  # one slot at most
    await bulk


async def test_lanes_take_slots_most_urgent_first() -> None:
    limits = limiter(rate=20)
    await limits.acquire(None)  # the next slot is 50 ms away: all three below queue for it
    taken = await stamps(limits, [1, 2, 3], [Lane.bulk, Lane.jobs, Lane.reply])
    assert taken[2] < taken[1] < taken[0]


async def test_a_chat_has_a_burst_then_its_interval_and_others_do_not_wait_for_it() -> None:
    taken = await stamps(limiter(burst=3, chat_s=0.2), [7, 7, 7, 7, 7, 8, 9])
    assert max(taken[:3]) < 0.1  # the burst went at once
    assert taken[3] >= 0.19  # then one per interval
    assert taken[4] >= 0.39
    assert max(taken[5:]) < 0.1  # chats 8 and 9 did not wait for chat 7


async def test_groups_wait_longer() -> None:
    taken = await stamps(limiter(burst=5, group_s=0.2), [-100, -100])
    assert taken[1] >= 0.19  # no burst in a group


async def test_a_pause_holds_back_that_chat_and_empties_its_burst() -> None:
    limits = limiter(burst=3, chat_s=0.1)
    limits.pause(5, 0.2)
    taken = await stamps(limits, [5, 6, 5])
    assert taken[1] < 0.15
    assert taken[0] >= 0.19
    assert taken[2] >= taken[0] + 0.09  # after the pause, one per interval again


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


def test_the_flood_guard_lets_a_quick_user_through_and_stops_a_flood() -> None:
    """Designed with the chat's burst: a quick user (6 taps, 0.3 s apart, over and over) is
    never told to slow down by the default guard, while a client firing updates at once is."""
    settings = ConversationSettings()
    now = [0.0]
    guard = FloodGuard(
        burst=settings.flood_messages, interval_s=settings.flood_interval_s, clock=lambda: now[0]
    )
    verdicts = []
    for _ in range(5):  # five rounds of 6 taps, a 2 s read between rounds
        for _ in range(6):
            verdicts.append(guard.check(1))
            now[0] += 0.3
        now[0] += 2.0
    assert verdicts == [Verdict.allow] * 30
    flood = [guard.check(2) for _ in range(15)]  # a client firing updates all at once
    assert flood == [Verdict.allow] * 10 + [Verdict.warn] + [Verdict.drop] * 4


async def test_a_broadcast_waiting_in_a_chat_does_not_hold_up_that_chats_reply() -> None:
    """Chat 7's broadcast message waits behind many others for a bot-wide slot; the reply
    into chat 7, asked for later, does not wait for it."""
    limits = limiter(rate=10, burst=5, chat_s=1.0)
    backlog = [limits.acquire(chat, Lane.bulk) for chat in range(100, 110)]
    bulk = asyncio.gather(*backlog, limits.acquire(7, Lane.bulk))
    await asyncio.sleep(0.05)
    asked = time.monotonic()
    await limits.acquire(7, Lane.reply)
    assert time.monotonic() - asked <= 0.15
    assert not bulk.done()
    await bulk
