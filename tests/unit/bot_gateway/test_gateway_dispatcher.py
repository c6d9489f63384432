"""The dispatcher knows the updates in hand, polled or fed, so shutdown can wait for them.

Polling's tasks are found through the public `feed_update` alone; if an aiogram upgrade stops
routing polled updates through it, the polling test here fails."""

from __future__ import annotations

import asyncio
from typing import Any

from aiogram import Bot
from aiogram.methods import GetMe, GetUpdates, TelegramMethod
from aiogram.types import Message, Update, User

from bot_gateway.dispatcher import TrackingDispatcher
from support.bot_api import OfflineSession

UPDATE = {
    "update_id": 1,
    "message": {
        "message_id": 5,
        "date": 0,
        "chat": {"id": 9, "type": "private"},
        "from": {"id": 9, "is_bot": False, "first_name": "A"},
        "text": "hi",
    },
}


class OneUpdate(OfflineSession):
    """A Bot API that has one update to give, then none."""

    def __init__(self) -> None:
        super().__init__()
        self._updates = [Update.model_validate(UPDATE)]

    async def make_request(  # aiogram's signature
        self,
        bot: Bot,
        method: TelegramMethod[Any],
        timeout: int | None = None,  # noqa: ASYNC109
    ) -> Any:
        if isinstance(method, GetMe):
            return User(id=42, is_bot=True, first_name="Bot", username="unit_bot")
        if isinstance(method, GetUpdates):
            updates, self._updates = self._updates, []
            if not updates:
                await asyncio.sleep(0.05)
            return updates
        raise AssertionError(f"unexpected {type(method).__name__}")


def slow_echo(dispatcher: TrackingDispatcher) -> tuple[asyncio.Event, asyncio.Event, list[str]]:
    started, release = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    @dispatcher.message()
    async def echo(message: Message) -> None:
        started.set()
        await release.wait()
        handled.append(message.text or "")

    return started, release, handled


async def test_a_polled_update_stays_in_hand_after_polling_stopped_until_handled() -> None:
    dispatcher = TrackingDispatcher()
    started, release, handled = slow_echo(dispatcher)
    bot = Bot("42:unit-test-token", session=OneUpdate())
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
    )
    await asyncio.wait_for(started.wait(), timeout=5)
    [task] = dispatcher.in_hand

    await dispatcher.stop_polling()
    await polling
    assert dispatcher.in_hand == {task}  # polling ended; the handling did not
    assert not task.done()

    release.set()
    await asyncio.wait_for(task, timeout=5)
    assert handled == ["hi"]
    assert dispatcher.in_hand == set()


async def test_an_update_is_in_hand_from_the_first_step_of_its_task() -> None:
    """Before any middleware (the FSM one reads the state first) gets to await."""
    dispatcher = TrackingDispatcher()
    _, release, handled = slow_echo(dispatcher)
    bot = Bot("42:unit-test-token", session=OneUpdate())
    task = asyncio.create_task(dispatcher.feed_update(bot, Update.model_validate(UPDATE)))
    await asyncio.sleep(0)
    assert dispatcher.in_hand == {task}

    release.set()
    await asyncio.wait_for(task, timeout=5)
    assert handled == ["hi"]
    assert dispatcher.in_hand == set()
