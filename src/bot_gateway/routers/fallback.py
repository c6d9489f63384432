"""Whatever no feature took: other media, unknown text, buttons that no longer parse."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.types import CallbackQuery, Message

from bot_gateway import keyboards, texts

log = logging.getLogger(__name__)

MEDIA = F.video | F.animation | F.sticker | F.audio | F.voice | F.video_note


async def not_a_photo(message: Message) -> None:
    await message.answer(texts.not_a_photo())


async def unknown(message: Message) -> None:
    await message.answer(texts.unknown_input(), reply_markup=keyboards.main_menu())


async def stale(callback: CallbackQuery) -> None:
    log.info("stale or forged callback %r from %s", callback.data, callback.from_user.id)
    await callback.answer(texts.stale_button(), show_alert=True)


def router() -> Router:
    """The fallback feature's handlers, on a router of their own."""
    feature = Router(name=__name__)
    feature.message(MEDIA)(not_a_photo)
    feature.message()(unknown)
    feature.callback_query()(stale)
    return feature
