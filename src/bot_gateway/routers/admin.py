"""Commands for the operators named in TELEGRAM_ADMIN_IDS: /stats, /broadcast."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot_gateway import texts
from bot_gateway.conversation import Conversation


def router(admins: frozenset[int]) -> Router:
    admin = Router(name=__name__)
    admin.message.filter(F.from_user.id.in_(admins))

    @admin.message(Command("stats"))
    async def stats(message: Message, conversation: Conversation) -> None:
        await message.answer(texts.stats(*await conversation.stats()))

    @admin.message(Command("broadcast"))
    async def broadcast(
        message: Message, command: CommandObject, conversation: Conversation
    ) -> None:
        """The text goes to every reachable chat through the rate-limited sender."""
        if not command.args or not command.args.strip():
            await message.answer(texts.broadcast_usage())
            return
        count = await conversation.broadcast(command.args.strip())
        await message.answer(texts.broadcast_queued(count))

    return admin
