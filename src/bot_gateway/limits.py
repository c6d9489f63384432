"""Telegram's rate limits as a scheduler: every call that posts into a chat waits for a slot.

One bot may send about 30 messages a second overall, one a second into a private chat and 20 a
minute into a group. Slots are spaced evenly (no bursts), so a server that counts any sliding
second never sees more than the rate. A 429 pauses the chat (and, for calls with no chat, the
whole bot) for the `retry_after` it names.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable


class RateLimiter:
    """Evenly spaced global slots, and a minimum interval per chat (longer for groups)."""

    def __init__(
        self,
        *,
        global_rate_per_s: float,
        chat_interval_s: float,
        group_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._spacing = 1.0 / global_rate_per_s
        self._chat_interval = chat_interval_s
        self._group_interval = group_interval_s
        self._clock = clock
        self._next_global = 0.0
        self._global_lock = asyncio.Lock()
        self._next_in_chat: dict[int, float] = {}
        self._chat_locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._paused_until = 0.0

    async def acquire(self, chat_id: int | None) -> None:
        """Wait until a call into `chat_id` (None: no chat) may go out, and take that slot."""
        if chat_id is None:
            await self._take_global()
            return
        lock = self._chat_locks[chat_id]
        async with lock:
            await self._sleep_until(self._next_in_chat.get(chat_id, 0.0))
            await self._take_global()
            interval = self._group_interval if chat_id < 0 else self._chat_interval
            self._next_in_chat[chat_id] = self._clock() + interval
        if not lock.locked() and len(self._next_in_chat) > 10_000:
            self._forget_idle_chats()

    def pause(self, chat_id: int | None, seconds: float) -> None:
        """Telegram said 429: nothing more into that chat (or at all) for `seconds`."""
        until = self._clock() + seconds
        if chat_id is None:
            self._paused_until = max(self._paused_until, until)
        else:
            self._next_in_chat[chat_id] = max(self._next_in_chat.get(chat_id, 0.0), until)

    async def _take_global(self) -> None:
        async with self._global_lock:
            slot = max(self._next_global, self._paused_until, self._clock())
            self._next_global = slot + self._spacing
            await self._sleep_until(slot)

    async def _sleep_until(self, moment: float) -> None:
        delay = moment - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)

    def _forget_idle_chats(self) -> None:
        now = self._clock()
        for chat_id, moment in list(self._next_in_chat.items()):
            if moment < now and not self._chat_locks[chat_id].locked():
                del self._next_in_chat[chat_id]
                self._chat_locks.pop(chat_id, None)
