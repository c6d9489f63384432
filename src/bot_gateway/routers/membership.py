"""The private chat's membership (`my_chat_member`): a user who blocks the bot is marked at
once, so broadcasts skip them; one who unblocks it gets them again (writing again does too,
see `AccountMiddleware`)."""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.enums import ChatMemberStatus, ChatType
from aiogram.types import ChatMemberUpdated

from bot_gateway.conversation import Conversation
from bot_gateway.middlewares import username_of

log = logging.getLogger(__name__)


async def changed(update: ChatMemberUpdated, conversation: Conversation) -> None:
    status = update.new_chat_member.status
    if status == ChatMemberStatus.KICKED:
        log.info("user %s blocked the bot", update.from_user.id)
        await conversation.blocked_by(update.chat.id)
    elif status == ChatMemberStatus.MEMBER:
        log.info("user %s is back", update.from_user.id)
        await conversation.back(update.from_user.id, username_of(update.from_user))


def router() -> Router:
    """The membership feature's handlers, on a router of their own."""
    feature = Router(name=__name__)
    feature.my_chat_member(F.chat.type == ChatType.PRIVATE)(changed)
    return feature
