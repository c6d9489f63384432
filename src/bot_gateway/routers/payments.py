"""/topup: the packages of both rails. Rubles: TopUpRequested, and billing answers with the
payment button. Telegram Stars: an invoice (XTR, no provider token), its pre-checkout query
answered at once, and its `successful_payment` reported to billing (StarsPaymentReceived).

54-FZ receipts: while billing sends them (`billing.receipt_policy`), a ruble package first needs
the buyer's email or phone: asked once with the reason, checked, remembered, then the top-up
goes on; /receipt or the last button of the packages changes it. A top-up billing refused for
want of one (`receipt_contact_missing`: receipts switched on meanwhile) is asked for the same
way and requested again with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
)

from bot_gateway import keyboards, receipt_contacts, texts
from bot_gateway.backends import Backends, ServiceBusyError
from bot_gateway.conversation import Conversation, Customer
from bot_gateway.keyboards import MenuAction, PackageChoice, StarsChoice
from contracts.rpc import StarsPackage, StarsPackages, TopUpPackages

log = logging.getLogger(__name__)

STARS = "XTR"
PAYLOAD_PREFIX = "stars"
PENDING = "topup_package"
"""FSM data: the ruble package last tapped and its offer message, to request once the buyer
gave a receipt contact."""


class ReceiptAsking(StatesGroup):
    waiting_contact = State()


@dataclass(frozen=True)
class InvoicePayload:
    """What a Stars invoice carries back in its pre-checkout query and successful payment:
    the package, its price and credits as offered, and the Telegram user it was sent to."""

    package_id: str
    stars: int
    credits: int
    telegram_id: int

    def encode(self) -> str:
        return ":".join(
            (PAYLOAD_PREFIX, self.package_id, str(self.stars), str(self.credits),
             str(self.telegram_id))
        )  # fmt: skip

    @classmethod
    def decode(cls, raw: str) -> InvoicePayload | None:
        parts = raw.split(":")
        if len(parts) != 5 or parts[0] != PAYLOAD_PREFIX:
            return None
        try:
            return cls(parts[1], int(parts[2]), int(parts[3]), int(parts[4]))
        except ValueError:
            return None


async def _offers(backends: Backends) -> tuple[TopUpPackages, StarsPackages]:
    offer = await backends.packages()
    try:
        stars = await backends.stars_packages()
    except ServiceBusyError:  # the ruble packages are still worth showing
        stars = StarsPackages(packages=[])
    return offer, stars


async def _receipt_to(
    customer: Customer, backends: Backends, conversation: Conversation
) -> str | None:
    """The receipt button's contact ("" for none yet); None while no receipts are sent."""
    try:
        if not await backends.receipts():
            return None
    except ServiceBusyError:  # the packages are still worth showing
        return None
    contact = await conversation.receipt_contact(customer)
    return "" if contact is None else receipt_contacts.shown(contact)


async def _menu(
    customer: Customer, backends: Backends, conversation: Conversation
) -> InlineKeyboardMarkup:
    offer, stars = await _offers(backends)
    receipt_to = await _receipt_to(customer, backends, conversation)
    return keyboards.packages(offer.packages, stars.packages, receipt_to)


async def topup_command(
    message: Message, customer: Customer, backends: Backends, conversation: Conversation
) -> None:
    markup = await _menu(customer, backends, conversation)
    await message.answer(texts.choose_package(), reply_markup=markup)


async def topup_button(
    callback: CallbackQuery, customer: Customer, backends: Backends, conversation: Conversation
) -> None:
    await callback.answer()  # the spinner stops now, not when billing answers
    markup = await _menu(customer, backends, conversation)
    if callback.message is not None:
        await callback.message.answer(texts.choose_package(), reply_markup=markup)


async def package(
    callback: CallbackQuery,
    callback_data: PackageChoice,
    customer: Customer,
    backends: Backends,
    conversation: Conversation,
    state: FSMContext,
) -> None:
    offer = await backends.packages()
    if callback_data.package_id not in {p.package_id for p in offer.packages}:
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    await callback.answer()  # the package is known; the rest waits on billing and the database
    offer_message_id = callback.message.message_id if callback.message else 0
    await state.update_data({PENDING: [callback_data.package_id, offer_message_id]})
    contact = None
    if await backends.receipts():
        contact = await conversation.receipt_contact(customer)
        if contact is None:
            await state.set_state(ReceiptAsking.waiting_contact)
            if callback.message is not None:
                await callback.message.answer(texts.receipt_ask())
            return
    await conversation.request_topup(customer, callback_data.package_id, offer_message_id, contact)
    if callback.message is not None:
        await callback.message.answer(texts.creating_payment())


async def receipt_command(
    message: Message, customer: Customer, conversation: Conversation, state: FSMContext
) -> None:
    """Where receipts go, and a new contact asked for (no top-up follows this one)."""
    await state.update_data({PENDING: None})
    await state.set_state(ReceiptAsking.waiting_contact)
    contact = await conversation.receipt_contact(customer)
    if contact is None:
        await message.answer(texts.receipt_ask())
    else:
        await message.answer(texts.receipt_current(receipt_contacts.shown(contact)))


async def receipt_button(
    callback: CallbackQuery,
    callback_data: MenuAction,
    customer: Customer,
    conversation: Conversation,
    state: FSMContext,
) -> None:
    """The packages' receipt button (a change) or a refused top-up's (the top-up follows)."""
    if callback_data.action == "receipt":
        await state.update_data({PENDING: None})
    await state.set_state(ReceiptAsking.waiting_contact)
    await callback.answer()
    if callback.message is None:
        return
    contact = await conversation.receipt_contact(customer)
    if contact is None or callback_data.action == "receipt_retry":
        await callback.message.answer(texts.receipt_ask())
    else:
        await callback.message.answer(texts.receipt_current(receipt_contacts.shown(contact)))


async def receipt_contact(
    message: Message, customer: Customer, conversation: Conversation, state: FSMContext
) -> None:
    """An email or phone for receipts: checked, remembered, and the waiting top-up requested."""
    contact = receipt_contacts.parse(message.text or "")
    if contact is None:
        await message.answer(texts.receipt_invalid())
        return
    await conversation.remember_receipt_contact(customer, contact)
    pending = (await state.get_data()).get(PENDING)
    await state.update_data({PENDING: None})
    await state.set_state(None)
    await message.answer(texts.receipt_saved(receipt_contacts.shown(contact)))
    if pending:
        package_id, offer_message_id = pending
        await conversation.request_topup(customer, package_id, offer_message_id, contact)
        await message.answer(texts.creating_payment())


def _stars_package(stars: StarsPackages, package_id: str) -> StarsPackage | None:
    return next((p for p in stars.packages if p.package_id == package_id), None)


async def stars_package(
    callback: CallbackQuery,
    callback_data: StarsChoice,
    customer: Customer,
    backends: Backends,
    bot: Bot,
) -> None:
    """The invoice of a Stars package (Telegram shows its Pay button)."""
    offer = _stars_package(await backends.stars_packages(), callback_data.package_id)
    if offer is None:
        await callback.answer(texts.stale_button(), show_alert=True)
        return
    await callback.answer()
    payload = InvoicePayload(offer.package_id, offer.stars, offer.credits, customer.telegram_id)
    await bot.send_invoice(
        chat_id=customer.chat_id,
        title=texts.stars_invoice_title(offer.credits),
        description=texts.stars_invoice_description(offer.credits),
        payload=payload.encode(),
        currency=STARS,
        prices=[LabeledPrice(label=texts.stars_invoice_title(offer.credits), amount=offer.stars)],
        provider_token="",
    )


async def pre_checkout(
    query: PreCheckoutQuery, backends: Backends, conversation: Conversation
) -> None:
    """Telegram waits 10 s for this answer before it takes the Stars: the package must still
    be offered at the invoice's price and credits, and the payer must be the account it was
    sent to; anything else is refused with the reason shown to the buyer."""
    payload = InvoicePayload.decode(query.invoice_payload)
    try:
        offer = None if payload is None else _stars_package(
            await backends.stars_packages(), payload.package_id
        )  # fmt: skip
    except ServiceBusyError:
        await query.answer(ok=False, error_message=texts.stars_refused_busy())
        return
    if (
        payload is None
        or offer is None
        or query.currency != STARS
        or query.total_amount != offer.stars
        or (payload.stars, payload.credits) != (offer.stars, offer.credits)
    ):
        log.info("pre-checkout %s refused: package of %r", query.id, query.invoice_payload)
        await query.answer(ok=False, error_message=texts.stars_refused_package())
        return
    if (
        payload.telegram_id != query.from_user.id
        or await conversation.known(query.from_user.id) is None
    ):
        log.info("pre-checkout %s refused: unknown payer %s", query.id, query.from_user.id)
        await query.answer(ok=False, error_message=texts.stars_refused_account())
        return
    await query.answer(ok=True)


async def stars_paid(message: Message, customer: Customer, conversation: Conversation) -> None:
    """Telegram took the Stars: report it to billing (which credits it once per charge and
    says so with the usual payment message)."""
    payment = message.successful_payment
    assert payment is not None
    payload = InvoicePayload.decode(payment.invoice_payload)
    if payload is None or payment.currency != STARS:
        log.error("successful payment %s with a foreign payload %r",
                  payment.telegram_payment_charge_id, payment.invoice_payload)  # fmt: skip
        return
    await conversation.stars_paid(
        customer,
        payment.telegram_payment_charge_id,
        payload.package_id,
        payment.total_amount,
        payload.credits,
    )


def router() -> Router:
    """The payments feature's handlers, on a router of their own."""
    feature = Router(name=__name__)
    feature.message(Command("topup"))(topup_command)
    feature.callback_query(MenuAction.filter(F.action == "topup"))(topup_button)
    feature.callback_query(PackageChoice.filter())(package)
    feature.message(Command("receipt"))(receipt_command)
    feature.callback_query(MenuAction.filter(F.action.in_({"receipt", "receipt_retry"})))(
        receipt_button
    )
    feature.message(ReceiptAsking.waiting_contact, F.text, ~F.text.startswith("/"))(receipt_contact)
    feature.callback_query(StarsChoice.filter())(stars_package)
    feature.pre_checkout_query()(pre_checkout)
    feature.message(F.successful_payment)(stars_paid)
    return feature
