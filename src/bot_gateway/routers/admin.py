"""Commands for the operators named in TELEGRAM_ADMIN_IDS: /stats, /broadcast, /grant.

Anyone else's command falls through to the other routers and gets the usual "not understood".
"""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot_gateway import texts
from bot_gateway.conversation import Conversation
from bot_gateway.domain import parse_grant

log = logging.getLogger(__name__)


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

    @admin.message(Command("grant"))
    async def grant(message: Message, command: CommandObject, conversation: Conversation) -> None:
        """Credits for a user, granted by billing through its ledger (the answer comes later)."""
        order = parse_grant(command.args)
        if order is None:
            log.info("admin %s: unusable /grant %r", message.chat.id, command.args)
            await message.answer(texts.grant_usage())
            return
        assert message.from_user is not None  # the admin filter matched on it
        request_id = await conversation.grant(message.from_user.id, order)
        log.info(
            "admin %s asked to grant %s credits to %s (grant %s)",
            message.from_user.id,
            order.credits,
            order.telegram_id,
            request_id,
        )
        await message.answer(texts.grant_requested(order.telegram_id, order.credits))

    return admin
