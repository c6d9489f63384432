"""/paysupport, /terms and /privacy: the texts the operator configures (GATEWAY_PAYSUPPORT_TEXTS,
GATEWAY_TERMS_TEXTS, GATEWAY_PRIVACY_TEXTS), in the user's language. Telegram requires a bot
that takes payments to answer /paysupport and to show its terms."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message
from aiogram.utils.i18n import get_i18n

from bot_gateway.settings import ConversationSettings


async def paysupport(message: Message, limits: ConversationSettings) -> None:
    await message.answer(limits.policy("paysupport", get_i18n().current_locale))


async def terms(message: Message, limits: ConversationSettings) -> None:
    await message.answer(limits.policy("terms", get_i18n().current_locale))


async def privacy(message: Message, limits: ConversationSettings) -> None:
    await message.answer(limits.policy("privacy", get_i18n().current_locale))


def router() -> Router:
    """The policies' commands, on a router of their own."""
    feature = Router(name=__name__)
    feature.message(Command("paysupport"))(paysupport)
    feature.message(Command("terms"))(terms)
    feature.message(Command("privacy"))(privacy)
    return feature
