"""A delivered result again: as a file in original quality (under the result), or as the photo
from /history, while it is kept. Sent at once, as the answer to the tap."""

from __future__ import annotations

import uuid

from aiogram import Bot, F, Router
from aiogram.types import CallbackQuery

from bot_gateway import keyboards, texts
from bot_gateway.conversation import Customer
from bot_gateway.keyboards import ResultAction
from bot_gateway.results import Results
from bot_gateway.sender import send_image


async def send_again(
    callback: CallbackQuery,
    callback_data: ResultAction,
    bot: Bot,
    customer: Customer,
    results: Results,
) -> None:
    """`file`: the original file; `send`: the photo with its buttons, as first delivered."""
    result = None
    if len(callback_data.request) == 32:
        result = await results.find(customer, uuid.UUID(hex=callback_data.request))
    if result is None or result.result_key is None:
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    data = await results.image(result)
    if data is None:
        await callback.answer(texts.result_not_kept(results.retention_days), show_alert=True)
        return
    await callback.answer()
    if callback_data.action == "file":
        caption = texts.result_file_caption(result.title)
        await send_image(bot, customer.chat_id, result.result_key, data, caption, as_file=True)
    else:
        markup = keyboards.result(callback_data.request)
        caption = texts.result_caption(result.title)
        await send_image(bot, customer.chat_id, result.result_key, data, caption, markup)


def router() -> Router:
    """The results feature's handlers, on a router of their own (before drafts', whose
    handler takes the other result buttons)."""
    feature = Router(name=__name__)
    feature.callback_query(ResultAction.filter(F.action.in_({"file", "send"})))(send_again)
    return feature
