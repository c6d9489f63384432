"""Parts of a long text Telegram cut apart come back as one text, answered once."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from aiogram.types import Update

from bot_gateway.split_texts import JOINED, SplitTexts, joined

PART = 20
_ids = itertools.count(1)


def said(chat_id: int, text: str) -> Update:
    return Update.model_validate(
        {
            "update_id": next(_ids),
            "message": {
                "message_id": next(_ids),
                "date": 0,
                "chat": {"id": chat_id, "type": "private"},
                "from": {"id": chat_id, "is_bot": False, "first_name": "T"},
                "text": text,
            },
        }
    )


class Bot:
    """What the middleware hands on: the texts handled, and the updates fed again."""

    def __init__(self, split: SplitTexts) -> None:
        self.split = split
        self.handled: list[str] = []
        self.any_handled = asyncio.Event()

    async def handle(self, update: Update, data: dict[str, Any]) -> str:
        assert update.message is not None
        self.handled.append(update.message.text or "")
        self.any_handled.set()
        return "handled"

    async def feed_update(self, bot: object, update: Update, **kwargs: Any) -> Any:
        return await self.split(self.handle, update, {**kwargs, "dispatcher": self, "bot": bot})

    async def send(self, update: Update) -> Any:
        return await self.split(self.handle, update, {"dispatcher": self, "bot": None})


async def test_parts_ended_by_a_shorter_one_go_on_as_one_text_with_the_last() -> None:
    bot = Bot(SplitTexts(window_s=0.3, min_part_length=PART))
    assert await bot.send(said(1, "a" * PART)) is None  # acknowledged, kept
    assert await bot.send(said(1, "b" * PART)) is None
    assert await bot.send(said(1, "tail")) == "handled"
    assert bot.handled == ["a" * PART + " " + "b" * PART + " tail"]


async def test_parts_with_no_shorter_one_are_fed_again_whole_after_the_window() -> None:
    bot = Bot(SplitTexts(window_s=0.05, min_part_length=PART))
    assert await bot.send(said(1, "a" * PART)) is None
    assert await bot.send(said(1, "b" * PART)) is None
    assert bot.handled == []
    await asyncio.wait_for(bot.any_handled.wait(), 5)
    assert bot.handled == ["a" * PART + " " + "b" * PART]
    assert await bot.send(said(1, "next")) == "handled"  # a text of its own
    assert bot.handled[-1] == "next"


async def test_short_texts_never_wait_and_chats_are_apart() -> None:
    bot = Bot(SplitTexts(window_s=30.0, min_part_length=PART))
    assert await bot.send(said(1, "a" * PART)) is None
    assert await bot.send(said(2, "hello")) == "handled"  # another chat, at once
    assert await bot.send(said(1, "tail")) == "handled"
    assert bot.handled == ["hello", "a" * PART + " tail"]


async def test_an_update_fed_again_passes_through() -> None:
    split = SplitTexts(window_s=30.0, min_part_length=PART)
    bot = Bot(split)
    assert await bot.feed_update(None, said(1, "a" * PART), **{JOINED: True}) == "handled"


def test_a_cut_at_a_space_keeps_one_space() -> None:
    assert joined(["one two ", "three"]) == "one two three"
    assert joined(["one two", " three"]) == "one two three"
    assert joined(["one two", "three"]) == "one two three"
