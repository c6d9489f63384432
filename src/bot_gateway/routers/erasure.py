"""/deletemydata: what goes and what stays, then a button to erase."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot_gateway import erasure
from bot_gateway.conversation import Customer
from bot_gateway.erasure import Erasure

CONFIRM = "erase:confirm"


async def deletemydata(message: Message) -> None:
    button = InlineKeyboardButton(text=erasure.confirm_button(), callback_data=CONFIRM)
    await message.answer(
        erasure.explained(), reply_markup=InlineKeyboardMarkup(inline_keyboard=[[button]])
    )


async def confirmed(
    callback: CallbackQuery, state: FSMContext, customer: Customer, erasing: Erasure
) -> None:
    await callback.answer()
    await state.clear()  # the draft in hand: its photo keys and prompt
    erased = await erasing.erase(customer)
    if callback.message is not None:
        await callback.message.answer(erasure.done(erased))


def router() -> Router:
    feature = Router(name=__name__)
    feature.message(Command("deletemydata"))(deletemydata)
    feature.callback_query(F.data == CONFIRM)(confirmed)
    return feature
