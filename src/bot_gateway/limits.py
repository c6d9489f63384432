"""Telegram's rate limits as a scheduler: every call that posts into a chat waits for a slot.

One bot may send about 30 messages a second overall; into one private chat a short burst,
then about one a second; into a group 20 a minute. The bot-wide budget is shared by lanes:
a reply to the user's own action goes before a job's status edit or result, and both before a
broadcast, so a running broadcast never delays a reply (it takes the slots the others leave).

Bot-wide slots are spaced evenly (no bursts), so a server that counts any sliding second never
sees more than the rate. Per chat, a burst of `chat_burst` messages goes at once and the chat
then gets one message every `chat_interval_s` (a token bucket, kept as its "theoretical arrival
time", GCRA). A 429 pauses the chat (and, for calls with no chat, the whole bot) for the
`retry_after` it names.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import defaultdict
from contextvars import ContextVar
from enum import IntEnum


class Lane(IntEnum):
    """Who waits for a message, most urgent first."""

    reply = 0
    """An answer to the user's own action: the user is looking at the chat."""
    jobs = 1
    """A job's status edits and result, and other notifications."""
    bulk = 2
    """Broadcasts and other sends to many chats."""


sending_lane: ContextVar[Lane] = ContextVar("sending_lane", default=Lane.reply)
"""The lane of the calls made in this context: handlers answer in `Lane.reply`; the outbound
sender sets each message's own lane before sending it."""


FORGET_ABOVE = 10_000
"""Chats remembered before the idle ones (bucket full again) are forgotten."""


class RateLimiter:
    """Bot-wide slots by lane, and a token bucket per chat (a slower one for groups)."""

    def __init__(
        self,
        *,
        global_rate_per_s: float,
        chat_burst: int,
        chat_interval_s: float,
        group_interval_s: float,
    ) -> None:
        self._slots = _Slots(global_rate_per_s)
        self._chat = (chat_interval_s, max(0, chat_burst - 1) * chat_interval_s)
        self._group = (group_interval_s, 0.0)
        self._arrival: dict[int, float] = {}
        """Per chat: when its bucket is full again (GCRA's theoretical arrival time)."""
        self._chat_locks: defaultdict[tuple[int, Lane], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._forget_above = FORGET_ABOVE

    async def acquire(self, chat_id: int | None, lane: Lane | None = None) -> None:
        """Wait until a call into `chat_id` (None: no chat) may go out, and take that slot."""
        lane = sending_lane.get() if lane is None else lane
        if chat_id is None:
            await self._slots.take(lane)
            return
        interval, slack = self._group if chat_id < 0 else self._chat
        lock = self._chat_locks[chat_id, lane]
        async with lock:  # a chat's calls of one lane take their slots in the order they asked
            while True:
                await _sleep_until(self._arrival.get(chat_id, 0.0) - slack)
                await self._slots.take(lane)
                now = time.monotonic()
                arrival = self._arrival.get(chat_id, 0.0)
                if now >= arrival - slack:
                    break
                # A call of a more urgent lane took the chat's last token while this one
                # waited for its bot-wide slot (a broadcast message never holds up the reply
                # of the same chat): the slot goes unused, and the call waits for the chat.
            self._arrival[chat_id] = max(arrival, now) + interval
        if len(self._arrival) > self._forget_above:
            self._forget_idle_chats()

    def pause(self, chat_id: int | None, seconds: float) -> None:
        """Telegram said 429: nothing more into that chat (or at all) for `seconds`, and the
        chat's burst starts empty after it."""
        until = time.monotonic() + seconds
        if chat_id is None:
            self._slots.pause(until)
            return
        slack = (self._group if chat_id < 0 else self._chat)[1]
        self._arrival[chat_id] = max(self._arrival.get(chat_id, 0.0), until + slack)

    def _forget_idle_chats(self) -> None:
        now = time.monotonic()
        busy = {chat_id for (chat_id, _), lock in self._chat_locks.items() if lock.locked()}
        for chat_id, full_at in list(self._arrival.items()):
            if full_at < now and chat_id not in busy:
                del self._arrival[chat_id]
        for key in [key for key in self._chat_locks if key[0] not in busy]:
            del self._chat_locks[key]
        self._forget_above = max(FORGET_ABOVE, 2 * len(self._arrival))


class _Slots:
    """Evenly spaced bot-wide slots; each free slot goes to the most urgent caller waiting
    (lowest lane, then first come)."""

    def __init__(self, rate_per_s: float) -> None:
        self._spacing = 1.0 / rate_per_s
        self._next = 0.0
        self._paused_until = 0.0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    async def take(self, lane: Lane) -> None:
        now = time.monotonic()
        if not self._waiting and now >= self._free_at():
            self._next = now + self._spacing
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (int(lane), next(self._order), waiter))
        self._arm()
        await waiter  # cancelled: `_grant` skips it and gives the slot to the next

    def pause(self, until: float) -> None:
        self._paused_until = max(self._paused_until, until)

    def _free_at(self) -> float:
        return max(self._next, self._paused_until)

    def _arm(self) -> None:
        if self._timer is None and self._waiting:
            delay = max(0.0, self._free_at() - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._grant)

    def _grant(self) -> None:
        self._timer = None
        now = time.monotonic()
        if now >= self._free_at():  # else paused meanwhile: wait on
            while self._waiting:
                waiter = heapq.heappop(self._waiting)[2]
                if not waiter.done():
                    waiter.set_result(None)
                    self._next = now + self._spacing
                    break
        self._arm()


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
