"""The command menu Telegram shows beside the input field (setMyCommands): in Russian for
Russian-speaking users, in English for English-speaking ones and, as the default, for every
other language (as the bot itself answers them)."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand
from aiogram.utils.i18n import I18n

from bot_gateway import texts

log = logging.getLogger(__name__)


async def publish_commands(bot: Bot, i18n: I18n, foreign: str) -> None:
    """Each language's commands, and `foreign`'s for all others; a failure is logged (the
    menu Telegram already has stays)."""
    for language in (*i18n.available_locales, None):
        with i18n.context(), i18n.use_locale(language or foreign):
            commands = [BotCommand(command=c, description=d) for c, d in texts.commands()]
        try:
            await bot.set_my_commands(commands, language_code=language)
        except TelegramAPIError as exc:
            log.warning("setMyCommands (%s) refused: %s", language or "default", exc)
