"""Every Bot API call of the process passes here: handlers' answers, notifications, broadcasts.

Calls that post into a chat take a slot from the `RateLimiter`; a 429 pauses that chat for its
`retry_after` and the call is tried again, a few times, before the error reaches the caller.
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

from bot_gateway.limits import RateLimiter
from bot_gateway.metrics import TELEGRAM_RETRY_AFTER

log = logging.getLogger(__name__)

UNLIMITED = frozenset(
    {"getMe", "getUpdates", "getFile", "answerCallbackQuery", "setWebhook", "deleteWebhook"}
)
"""Calls that post nothing into a chat: Telegram does not count them against the limits."""


class RateLimitedRequests(BaseRequestMiddleware):
    def __init__(self, limiter: RateLimiter, *, retry_after_tries: int) -> None:
        self._limiter = limiter
        self._tries = retry_after_tries

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if method.__api_method__ in UNLIMITED:
            return await make_request(bot, method)
        chat_id = _chat_of(method)
        for attempt in range(self._tries + 1):
            await self._limiter.acquire(chat_id)
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                TELEGRAM_RETRY_AFTER.labels(method.__api_method__).inc()
                if attempt == self._tries:
                    raise
                log.warning(
                    "429 on %s in chat %s: retrying after %ss",
                    method.__api_method__,
                    chat_id,
                    exc.retry_after,
                )
                self._limiter.pause(chat_id, float(exc.retry_after))
        raise AssertionError("unreachable")


def _chat_of(method: Any) -> int | None:
    chat_id = getattr(method, "chat_id", None)
    return chat_id if isinstance(chat_id, int) else None
