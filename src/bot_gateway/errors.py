"""The central error handler: a user never meets a traceback, always a localized sentence."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiogram.types import CallbackQuery, ErrorEvent
from aiogram.utils.i18n import I18n

from bot_gateway import texts
from bot_gateway.backends import ServiceBusyError
from bot_gateway.domain import locale_for
from bot_gateway.middlewares import chosen_language
from bot_gateway.snapshot import UpdateSnapshot
from messaging.consumer import is_transient

log = logging.getLogger(__name__)


def error_handler(i18n: I18n, foreign: str) -> Callable[..., Awaitable[bool]]:
    """Log the failure; tell the user, in their language, to try again: "busy" when a service,
    the broker or the database did not answer (nothing was charged), "broken" otherwise."""

    async def on_error(event: ErrorEvent, snapshot: UpdateSnapshot | None = None) -> bool:
        update = event.update
        user = (
            update.message.from_user
            if update.message
            else update.callback_query.from_user
            if update.callback_query
            else update.pre_checkout_query.from_user
            if update.pre_checkout_query
            else None
        )
        busy = isinstance(event.exception, ServiceBusyError) or is_transient(event.exception)
        if busy:
            log.warning("update %s: %r; the user is asked to retry", update.update_id,
                        event.exception)  # fmt: skip
        else:
            log.exception("update %s failed", update.update_id, exc_info=event.exception)
        locale = locale_for(
            user.language_code if user else None,
            i18n.available_locales,
            i18n.default_locale,
            foreign,
            chosen_language(user, snapshot),
        )
        with i18n.context(), i18n.use_locale(locale):
            text = texts.busy() if busy else texts.error()
        if update.message is not None:
            await update.message.answer(text)
        elif update.callback_query is not None:
            await _tell_tapper(update.callback_query, text)
        elif update.pre_checkout_query is not None:
            # Telegram holds the Stars ~10 s for an answer, then fails the payment unexplained
            await update.pre_checkout_query.answer(ok=False, error_message=text)
        return True

    return on_error


async def _tell_tapper(query: CallbackQuery, text: str) -> None:
    """An alert, or, when Telegram refuses it (the handler answered the tap before it failed,
    or the tap is too old; `LateAnswers` says False), the same sentence in the chat."""
    if not await query.answer(text, show_alert=True) and query.message is not None:
        await query.message.answer(text)
