"""Groups: the bot works in private chats. Added to a group it says so once, with a button to
the private chat; after that it is silent there: no member's balance, menu or offer is ever
posted in a group, and no account is opened for a group's members."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.enums import ChatMemberStatus, ChatType
from aiogram.types import CallbackQuery, Chat, ChatMemberUpdated, Message

from bot_gateway import keyboards, texts
from bot_gateway.conversation import Conversation

log = logging.getLogger(__name__)

NOT_PRIVATE = F.chat.type != ChatType.PRIVATE
PRESENT = (ChatMemberStatus.MEMBER, ChatMemberStatus.ADMINISTRATOR)


async def _point(chat: Chat, bot: Bot, conversation: Conversation) -> None:
    me = await bot.me()
    markup = keyboards.open_private(me.username or "")
    await conversation.point_to_private(chat.id, texts.private_only(), markup)


async def added(update: ChatMemberUpdated, bot: Bot, conversation: Conversation) -> None:
    if update.new_chat_member.status in PRESENT:
        await _point(update.chat, bot, conversation)


async def message(message: Message, bot: Bot, conversation: Conversation) -> None:
    """Answered at most once per group (the pointer), whatever is said there."""
    log.info("group %s: message from %s, not answered", message.chat.id, message.from_user)
    await _point(message.chat, bot, conversation)


async def button(callback: CallbackQuery) -> None:
    await callback.answer(texts.private_only(), show_alert=True)


def router() -> Router:
    """The groups feature's handlers: everything from a chat that is not private."""
    feature = Router(name=__name__)
    feature.my_chat_member(NOT_PRIVATE)(added)
    feature.message(NOT_PRIVATE)(message)
    feature.callback_query(F.message.chat.type != ChatType.PRIVATE)(button)
    return feature
