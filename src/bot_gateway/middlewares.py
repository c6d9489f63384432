"""What every update passes before a handler: flood control, the user's language, and their
account (opened in billing on first contact)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiogram import BaseMiddleware
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Message, TelegramObject, User
from aiogram.utils.i18n import I18n, I18nMiddleware

from bot_gateway import texts
from bot_gateway.backends import Backends
from bot_gateway.conversation import Conversation, Customer
from bot_gateway.domain import locale_for
from bot_gateway.snapshot import UpdateSnapshot
from bot_gateway.throttling import FloodGuard, Verdict

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class LanguageMiddleware(I18nMiddleware):
    """The language the user chose in the menu; else their Telegram language when the bot
    speaks it, English for another, Russian when Telegram names none."""

    def __init__(self, i18n: I18n, foreign: str) -> None:
        super().__init__(i18n)
        self._foreign = foreign

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        user: User | None = data.get("event_from_user")
        return locale_for(
            user.language_code if user else None,
            self.i18n.available_locales,
            self.i18n.default_locale,
            self._foreign,
            chosen_language(user, data.get("snapshot")),
        )


class FloodMiddleware(BaseMiddleware):
    """Past the limit a user is told once to slow down; the rest is dropped until they do."""

    def __init__(self, guard: FloodGuard) -> None:
        self._guard = guard

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None or (isinstance(event, Message) and event.successful_payment):
            return await handler(event, data)  # Stars already taken are never dropped
        verdict = self._guard.check(user.id)
        if verdict is Verdict.allow:
            return await handler(event, data)
        log.info("flood from user %s: %s", user.id, verdict.value)
        if verdict is Verdict.warn:
            if isinstance(event, Message):
                await event.answer(texts.flood())
            elif isinstance(event, CallbackQuery):
                await event.answer(texts.flood(), show_alert=True)
        elif isinstance(event, CallbackQuery):
            await event.answer()
        return None


class AccountMiddleware(BaseMiddleware):
    """`customer` for handlers: remembered by the gateway (as the update's `snapshot` found
    them), or opened in billing now."""

    def __init__(self, conversation: Conversation, backends: Backends) -> None:
        self._conversation = conversation
        self._backends = backends

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        chat = data.get("event_chat")
        if user is None or user.is_bot or chat is None or chat.type != ChatType.PRIVATE:
            return await handler(event, data)  # no account for a group's members
        language = data["i18n"].current_locale
        snapshot: UpdateSnapshot | None = data.get("snapshot")
        known = await self._conversation.known(user.id, snapshot)
        if known is None:
            account = await self._backends.ensure_account(user.id, username_of(user))
            data["opened_account"] = account
            known = Customer(user.id, account.user_id, user.id, language)
            await self._conversation.remember(known, username_of(user), snapshot)
        elif known.language != language or known.blocked:  # back: broadcasts reach them
            known = replace(known, language=language, blocked=False)
            await self._conversation.remember(known, username_of(user), snapshot)
        customer = replace(known, chat_id=chat.id)
        data["customer"] = customer
        return await handler(event, data)


def chosen_language(user: User | None, snapshot: UpdateSnapshot | None) -> str | None:
    """The language `user` picked in the menu, as the update's snapshot found them."""
    known = snapshot.users.get(user.id) if snapshot is not None and user is not None else None
    return known.chosen_language if known is not None else None


def username_of(user: User) -> str | None:
    name = user.username or user.full_name
    return name[:100] if name else None
