"""The central error handler answers whatever the user is waiting on, a payment included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import AnswerCallbackQuery, AnswerPreCheckoutQuery, SendMessage, TelegramMethod
from aiogram.types import CallbackQuery, PreCheckoutQuery, Update
from aiogram.utils.i18n import I18n

import bot_gateway
from bot_gateway.errors import error_handler
from bot_gateway.late_answers import LateAnswers
from support.bot_api import OfflineSession

LOCALES = Path(bot_gateway.__file__).parent / "locales"
PRE_CHECKOUT = {
    "update_id": 1,
    "pre_checkout_query": {
        "id": "q1",
        "from": {"id": 9, "is_bot": False, "first_name": "A", "language_code": "en"},
        "currency": "XTR",
        "total_amount": 50,
        "invoice_payload": "stars:p100:50:100:9",
    },
}


def tap(language: str) -> dict[str, Any]:
    user = {"id": 9, "is_bot": False, "first_name": "A", "language_code": language}
    message = {"message_id": 5, "date": 0, "chat": {"id": 9, "type": "private"}, "text": "menu"}
    return {
        "update_id": 2,
        "callback_query": {
            "id": "q2", "from": user, "chat_instance": "9", "message": message, "data": "m:x",
        },
    }  # fmt: skip


class Recorded(OfflineSession):
    """A Bot API that answers every call with True and remembers it; like Telegram, it refuses
    a second answer to one callback query."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[TelegramMethod[Any]] = []

    async def make_request(  # aiogram's signature
        self,
        bot: Bot,
        method: TelegramMethod[Any],
        timeout: int | None = None,  # noqa: ASYNC109
    ) -> Any:
        answered = any(
            isinstance(call, AnswerCallbackQuery)
            and call.callback_query_id == getattr(method, "callback_query_id", None)
            for call in self.calls
        )
        self.calls.append(method)
        if isinstance(method, AnswerCallbackQuery) and answered:
            raise TelegramBadRequest(
                method,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        return True


async def test_a_pre_checkout_that_broke_is_refused_at_once_not_left_to_time_out() -> None:
    """Telegram holds the buyer's Stars for 10 s waiting for this answer, then fails the
    payment with its own words; a failure of ours is answered now, in the buyer's language."""
    i18n = I18n(path=LOCALES, default_locale="ru", domain="messages")
    dispatcher = Dispatcher()
    dispatcher.errors()(error_handler(i18n, "en"))

    @dispatcher.pre_checkout_query()
    async def broken(query: PreCheckoutQuery) -> None:
        raise RuntimeError("the database went away")

    session = Recorded()
    bot = Bot("42:unit-test-token", session=session)
    await dispatcher.feed_update(bot, Update.model_validate(PRE_CHECKOUT))

    [answer] = [call for call in session.calls if isinstance(call, AnswerPreCheckoutQuery)]
    assert (answer.pre_checkout_query_id, answer.ok) == ("q1", False)
    assert answer.error_message is not None
    assert answer.error_message.startswith("Something went wrong")


@pytest.mark.parametrize(
    ("language", "sentence"),
    [("ru", "Что-то пошло не так"), ("en", "Something went wrong")],
    ids=["ru", "en"],
)
async def test_a_tap_that_broke_after_its_answer_is_told_in_the_chat(
    language: str, sentence: str
) -> None:
    """The handler stopped the spinner, then failed: Telegram refuses a second answer, so the
    sentence goes into the chat, not into an alert nobody sees."""
    i18n = I18n(path=LOCALES, default_locale="ru", domain="messages")
    dispatcher = Dispatcher()
    dispatcher.errors()(error_handler(i18n, "en"))

    @dispatcher.callback_query()
    async def broken(callback: CallbackQuery) -> None:
        await callback.answer()
        raise RuntimeError("the database went away")

    session = Recorded()
    session.middleware(LateAnswers())
    bot = Bot("42:unit-test-token", session=session)
    await dispatcher.feed_update(bot, Update.model_validate(tap(language)))

    [told] = [call for call in session.calls if isinstance(call, SendMessage)]
    assert (told.chat_id, told.text.startswith(sentence)) == (9, True)
