"""/start (and where its link came from), the main menu, the language, /help and /balance."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import I18n

from bot_gateway import keyboards, texts
from bot_gateway.backends import Backends
from bot_gateway.conversation import Conversation, Customer
from bot_gateway.domain import start_source
from bot_gateway.fsm_storage import forget
from bot_gateway.keyboards import LanguageChoice, MenuAction
from bot_gateway.middlewares import username_of
from contracts.rpc import Account


async def start(
    message: Message,
    customer: Customer,
    backends: Backends,
    conversation: Conversation,
    state: FSMContext,
    command: CommandObject,
    opened_account: Account | None = None,
) -> None:
    """Welcome with the balance (opening the account on first contact) and the menu; a
    t.me/<bot>?start=<source> link's source is recorded on the user, the first one kept."""
    await forget(state)
    source = start_source(command.args)
    if source is not None:
        await conversation.came_from(customer, source)
    user = message.from_user
    name = user.first_name if user else ""
    username = username_of(user) if user else None
    account = opened_account or await backends.ensure_account(customer.telegram_id, username)
    welcome = account.balance if account.created else None
    await message.answer(
        texts.welcome(name, account.balance, welcome), reply_markup=keyboards.main_menu()
    )


async def menu(callback: CallbackQuery, state: FSMContext) -> None:
    await forget(state)
    await callback.answer()
    if callback.message is not None:
        await callback.message.answer(texts.menu_prompt(), reply_markup=keyboards.main_menu())


async def language_menu(callback: CallbackQuery) -> None:
    await callback.answer()
    if callback.message is not None:
        await callback.message.answer(texts.choose_language(), reply_markup=keyboards.languages())


async def choose_language(
    callback: CallbackQuery,
    callback_data: LanguageChoice,
    customer: Customer,
    conversation: Conversation,
    i18n: I18n,
) -> None:
    """The user's language from now on: this answer already speaks it."""
    if callback_data.language not in i18n.available_locales or callback.message is None:
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    await conversation.choose_language(customer, callback_data.language)
    with i18n.use_locale(callback_data.language):
        await callback.answer()
        await callback.message.answer(
            texts.language_chosen() + "\n" + texts.menu_prompt(),
            reply_markup=keyboards.main_menu(),
        )


async def help_command(message: Message) -> None:
    await message.answer(texts.help_text(), reply_markup=keyboards.main_menu())


async def help_button(callback: CallbackQuery) -> None:
    await callback.answer()
    if callback.message is not None:
        await callback.message.answer(texts.help_text())


async def balance_command(message: Message, customer: Customer, backends: Backends) -> None:
    user = message.from_user
    account = await backends.ensure_account(
        customer.telegram_id, username_of(user) if user else None
    )
    await message.answer(texts.balance_line(account.balance), reply_markup=keyboards.topup())


async def balance_button(callback: CallbackQuery, customer: Customer, backends: Backends) -> None:
    await callback.answer()  # the spinner stops now, not when billing answers
    account = await backends.ensure_account(customer.telegram_id, username_of(callback.from_user))
    if callback.message is not None:
        await callback.message.answer(
            texts.balance_line(account.balance), reply_markup=keyboards.topup()
        )


def router() -> Router:
    """The menu feature's handlers, on a router of their own."""
    feature = Router(name=__name__)
    feature.message(CommandStart())(start)
    feature.callback_query(MenuAction.filter(F.action == "menu"))(menu)
    feature.callback_query(MenuAction.filter(F.action == "language"))(language_menu)
    feature.callback_query(LanguageChoice.filter())(choose_language)
    feature.message(Command("help"))(help_command)
    feature.callback_query(MenuAction.filter(F.action == "help"))(help_button)
    feature.message(Command("balance"))(balance_command)
    feature.callback_query(MenuAction.filter(F.action == "balance"))(balance_button)
    return feature
