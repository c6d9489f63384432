"""An album arrives as several updates, one message per photo, sharing a `media_group_id`.
They are gathered here, before anything else sees them, so the bot answers the album once.

Every part is acknowledged at once (a webhook that held it would hold the next part back) and
kept; each new part restarts a short wait. When the wait passes quietly, the first part's update
is fed again, with every part's message (in the order sent) under `ALBUM` in the handler data.
Held in the process, as split texts are: a chat's updates reach one replica (polling, or the
webhook's per-chat routing); an album still gathering when the process stops is lost with it
(the user sees no answer and sends it again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.types import Message, Update

ALBUM = "album"
"""Handler data of an album's update: its messages, in the order sent."""

Handler = Callable[[Any, dict[str, Any]], Awaitable[Any]]


@dataclass
class _Gathering:
    first: Update
    messages: list[Message] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Albums(BaseMiddleware):
    """On the dispatcher's updates, first: the messages of one media group become one update."""

    def __init__(self, *, window_s: float) -> None:
        self._window_s = window_s
        self._gathering: dict[tuple[int, str], _Gathering] = {}
        self._feeding: set[asyncio.Task[Any]] = set()

    async def __call__(self, handler: Handler, event: Any, data: dict[str, Any]) -> Any:
        message = event.message if isinstance(event, Update) else None
        if ALBUM in data or message is None or message.media_group_id is None:
            return await handler(event, data)
        key = (message.chat.id, message.media_group_id)
        gathering = self._gathering.get(key)
        if gathering is None:
            gathering = self._gathering[key] = _Gathering(event)
        gathering.messages.append(message)
        if gathering.timer is not None:
            gathering.timer.cancel()
        gathering.timer = asyncio.get_running_loop().call_later(
            self._window_s, self._feed, key, data["dispatcher"], data["bot"]
        )
        return None

    def _feed(self, key: tuple[int, str], dispatcher: Dispatcher, bot: Bot) -> None:
        gathering = self._gathering.pop(key)
        messages = sorted(gathering.messages, key=lambda message: message.message_id)
        task = asyncio.create_task(
            dispatcher.feed_update(bot, gathering.first, **{ALBUM: messages})
        )
        self._feeding.add(task)
        task.add_done_callback(self._feeding.discard)
