"""/topup: the packages, then TopUpRequested; billing answers with the payment button."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot_gateway import keyboards, texts
from bot_gateway.backends import Backends
from bot_gateway.conversation import Conversation, Customer
from bot_gateway.keyboards import MenuAction, PackageChoice


async def topup_command(message: Message, backends: Backends) -> None:
    offer = await backends.packages()
    await message.answer(texts.choose_package(), reply_markup=keyboards.packages(offer.packages))


async def topup_button(callback: CallbackQuery, backends: Backends) -> None:
    offer = await backends.packages()
    await callback.answer()
    if callback.message is not None:
        await callback.message.answer(
            texts.choose_package(), reply_markup=keyboards.packages(offer.packages)
        )


async def package(
    callback: CallbackQuery,
    callback_data: PackageChoice,
    customer: Customer,
    backends: Backends,
    conversation: Conversation,
) -> None:
    offer = await backends.packages()
    if callback_data.package_id not in {p.package_id for p in offer.packages}:
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    offer_message_id = callback.message.message_id if callback.message else 0
    await conversation.request_topup(customer, callback_data.package_id, offer_message_id)
    await callback.answer()
    if callback.message is not None:
        await callback.message.answer(texts.creating_payment())


def router() -> Router:
    """The payments feature's handlers, on a router of their own."""
    feature = Router(name=__name__)
    feature.message(Command("topup"))(topup_command)
    feature.callback_query(MenuAction.filter(F.action == "topup"))(topup_button)
    feature.callback_query(PackageChoice.filter())(package)
    return feature
