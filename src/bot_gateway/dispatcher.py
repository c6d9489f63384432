"""The gateway's aiogram Dispatcher: one that knows which updates it has in hand.

Polling hands each update to a task of its own and keeps those tasks only in a private set;
`stop_polling()` ends the polling loop but not the handling, and aiogram offers no public way
to wait for it. Every update, polled or pushed to the webhook, enters through the public
`feed_update`, first thing in its task; so noting the task there, before any middleware runs,
lets shutdown wait for the updates in hand without touching aiogram's internals.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update


class TrackingDispatcher(Dispatcher):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._in_hand: set[asyncio.Task[Any]] = set()

    @property
    def in_hand(self) -> set[asyncio.Task[Any]]:
        """The tasks feeding an update through the dispatcher right now (a copy)."""
        return set(self._in_hand)

    async def feed_update(self, bot: Bot, update: Update, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        if task is None or task in self._in_hand:  # no task, or one already noted
            return await super().feed_update(bot, update, **kwargs)
        self._in_hand.add(task)
        try:
            return await super().feed_update(bot, update, **kwargs)
        finally:
            self._in_hand.discard(task)
