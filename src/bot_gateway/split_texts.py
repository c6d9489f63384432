"""Telegram clients cut a text longer than 4,096 characters into several messages, sent one
right after another. Parts of one chat that arrive within a short window of each other are put
back together here, before anything else sees them, so the bot answers the whole text once.

A text as long as a part waits: its update is acknowledged at once (a webhook that held it
would hold the next part back too) and kept; a later long part joins it and restarts the wait;
a shorter one ends the text, and its update carries the whole text on. Otherwise, when the
window passes quietly, the first part's update is fed again with the whole text. Shorter texts
never wait. Held in the process: a chat's updates reach one replica (polling, or the webhook's
per-chat routing); a text still waiting when the process stops is lost with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.types import Update

JOINED = "split_texts_joined"
"""Set in the data of an update fed again with its whole text: it passes straight through."""

Handler = Callable[[Any, dict[str, Any]], Awaitable[Any]]


@dataclass
class _Waiting:
    first: Update
    parts: list[str] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class SplitTexts(BaseMiddleware):
    """On the dispatcher's updates, first: parts of one long text become one text."""

    def __init__(self, *, window_s: float, min_part_length: int) -> None:
        self._window_s = window_s
        self._min_part_length = min_part_length
        self._waiting: dict[int, _Waiting] = {}
        self._feeding: set[asyncio.Task[Any]] = set()

    async def __call__(self, handler: Handler, event: Any, data: dict[str, Any]) -> Any:
        message = event.message if isinstance(event, Update) else None
        if data.get(JOINED) or message is None or message.text is None:
            return await handler(event, data)
        chat_id, text = message.chat.id, message.text
        waiting = self._waiting.get(chat_id)
        if waiting is None and len(text) < self._min_part_length:
            return await handler(event, data)
        if waiting is None:
            waiting = self._waiting[chat_id] = _Waiting(event)
        waiting.parts.append(text)
        if waiting.timer is not None:
            waiting.timer.cancel()
        if len(text) >= self._min_part_length:
            waiting.timer = asyncio.get_running_loop().call_later(
                self._window_s, self._feed_whole, chat_id, data["dispatcher"], data["bot"]
            )
            return None
        del self._waiting[chat_id]
        return await handler(with_text(event, joined(waiting.parts)), data)

    def _feed_whole(self, chat_id: int, dispatcher: Dispatcher, bot: Bot) -> None:
        waiting = self._waiting.pop(chat_id)
        whole = with_text(waiting.first, joined(waiting.parts))
        task = asyncio.create_task(dispatcher.feed_update(bot, whole, **{JOINED: True}))
        self._feeding.add(task)
        task.add_done_callback(self._feeding.discard)


def with_text(update: Update, text: str) -> Update:
    """`update`, its message saying `text` (the first part's entities would not fit)."""
    assert update.message is not None
    message = update.message.model_copy(update={"text": text, "entities": None})
    return update.model_copy(update={"message": message})


def joined(parts: list[str]) -> str:
    """The parts as one text; where a cut fell on a space the client dropped, it comes back."""
    text = parts[0]
    for part in parts[1:]:
        gap = "" if text[-1:].isspace() or part[:1].isspace() else " "
        text += gap + part
    return text
