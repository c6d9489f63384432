"""A tap is never lost to a late answer.

Telegram refuses an answerCallbackQuery sent more than about 15 s after the tap ("query is too
old"), or after the query was answered already (with the same words); a busy moment or a
redelivered update gets there. The answer only stops the button's spinner, so its refusal is
logged and answered False, not answered, and the handler goes on to do what was tapped. (The
error handler, whose alert comes after the handler answered, then says it in the chat.)
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramBadRequest
from aiogram.methods import AnswerCallbackQuery, TelegramMethod

log = logging.getLogger(__name__)

TOO_LATE = ("query is too old", "query ID is invalid")


class LateAnswers(BaseRequestMiddleware):
    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[Any],
        bot: Bot,
        method: TelegramMethod[Any],
    ) -> Any:
        try:
            return await make_request(bot, method)
        except TelegramBadRequest as exc:
            if not isinstance(method, AnswerCallbackQuery) or not any(
                words in exc.message for words in TOO_LATE
            ):
                raise
            log.info("callback %s answered too late or twice: %s",
                     method.callback_query_id, exc.message)  # fmt: skip
            return False
