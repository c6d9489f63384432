"""54-FZ receipts in the chat, end to end: a shop whose billing sends receipts (YOOKASSA_RECEIPTS)
against a fake YooKassa that refuses any payment without a valid receipt. The bot asks once for
an email or phone with the reason, checks it, remembers it, lets the user change it, and sends
it (with the user's language) on TopUpRequested; a top-up billing refused for want of one is
asked for and requested again. Billing, the gateway and its own fake Telegram on a broker
namespace of their own (billing's receipt setting is fixed at its start)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from billing.app import build as build_billing
from billing.settings import YooKassaSettings
from bot_gateway.app import build as build_gateway
from bot_gateway.receipt_contacts import parse
from contracts.events import PaymentCreated, PaymentFailed, TopUpRequested
from contracts.topology import build_topology
from messaging.broker import declare_topology, delete_topology
from sandbox.telegram import TelegramSandbox
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import make_settings as billing_settings
from support.database import RUN_ID, DatabaseFactory, engine_at, migrated_database
from support.gateway_harness import Chat, Stack, gateway_settings, new_user
from support.jobs_harness import EventLog
from support.messaging import eventually

PHRASES = {
    "ru": {
        "balance": "Ваш баланс: {}",
        "packages": "Выберите пакет",
        "package": "100 кредитов за 100 ₽",
        "ask": "По закону (54-ФЗ) к каждому платежу выдаётся чек",
        "invalid": "Это не email и не номер телефона",
        "saved": "Чеки будут приходить на {}",
        "current": "Чеки приходят на {}",
        "receipt_button": "Чек: {}",
        "no_contact_button": "Email или телефон для чеков",
        "pay": "Оплатите 100 ₽",
        "paid": "Платёж получен: +100 кредитов",
        "description": "Пополнение баланса",
        "missing": "Для платежа нужен чек (54-ФЗ)",
        "give": "Указать email или телефон",
    },
    "en": {
        "balance": "Your balance: {}",
        "packages": "Choose a package",
        "package": "100 credits for 100 ₽",
        "ask": "By law (54-FZ) every payment comes with a receipt",
        "invalid": "That is not an email or a phone number",
        "saved": "Receipts will go to {}",
        "current": "Receipts go to {}",
        "receipt_button": "Receipt: {}",
        "no_contact_button": "Email or phone for receipts",
        "pay": "Pay 100 ₽",
        "paid": "Payment received: +100 credits",
        "description": "Balance top-up",
        "missing": "The payment needs a receipt (54-FZ)",
        "give": "Give an email or phone",
    },
}
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])


@pytest.fixture(scope="module")
async def receipts_database_url(databases: DatabaseFactory) -> str:
    """A database of its own: a billing and a gateway on the shared one would share its outboxes
    and outbound messages with the shared stack's, whose relays and sender would take them."""
    return await migrated_database(databases, "receipts")


@pytest.fixture(scope="module")
async def receipts_stack(
    receipts_database_url: str, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    topology = build_topology(f"test-{RUN_ID}-rc-{uuid.uuid4().hex[:6]}")
    await declare_topology(amqp_url, topology)
    telegram = TelegramSandbox()
    await telegram.start()
    yookassa = YooKassaSandbox(require_receipts=True)
    await yookassa.start()
    receipts = YooKassaSettings(api_url=yookassa.api_url, timeout_s=5, receipts=True)
    billing = build_billing(
        billing_settings(receipts_database_url, amqp_url, topology, yookassa, yookassa=receipts)
    )
    root = tmp_path_factory.mktemp("receipts")
    gateway = build_gateway(
        gateway_settings(receipts_database_url, amqp_url, topology, telegram, root)
    )
    events = EventLog(amqp_url, topology)
    await events.start()
    try:
        async with billing.app, gateway.app:
            yield Stack(telegram, events, None, gateway, Path(root), billing, yookassa)  # type: ignore[arg-type]
    finally:
        await events.stop()
        await yookassa.stop()
        await telegram.stop()
        await delete_topology(amqp_url, topology)


async def started(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(PHRASES[language]["balance"].format(60))
    return chat


@LANGUAGES
async def test_the_bot_asks_once_for_a_receipt_contact_and_the_payment_carries_it(
    receipts_stack: Stack, receipts_database_url: str, language: str
) -> None:
    p = PHRASES[language]
    stack = receipts_stack
    chat = await started(stack, language)
    chat.say("/topup")
    packages = await chat.expect(p["packages"])
    assert packages.button(p["no_contact_button"])
    chat.press(packages, p["package"])
    await chat.expect(p["ask"])  # asked first, with the reason; nothing requested yet
    assert stack.events.of(TopUpRequested, telegram_id=chat.user.id) == []
    chat.say("not a contact")
    await chat.expect(p["invalid"])
    chat.say("8 (900) 123-45-67")
    await chat.expect(p["saved"].format("+79001234567"))
    await chat.expect(p["pay"])
    (request,) = stack.events.of(TopUpRequested, telegram_id=chat.user.id)
    assert (request.phone, request.email, request.language) == ("79001234567", None, language)
    (created,) = await stack.events.wait_for(PaymentCreated, chat_id=chat.user.id)
    (remote,) = [
        payment for payment in stack.yookassa.payments.values()
        if payment["metadata"]["payment_id"] == str(created.payment_id)
    ]  # fmt: skip
    assert {"phone": "79001234567"} in [receipt["customer"] for receipt in stack.yookassa.receipts]
    assert p["description"] in remote["description"]  # in the user's language
    chat.mark()
    assert await stack.pay(created.payment_id) == 200
    await chat.expect(p["paid"])

    # remembered: the next top-up asks nothing; the button shows the contact and changes it
    chat.say("/topup")
    packages = await chat.expect(p["packages"])
    chat.press(packages, p["receipt_button"].format("+79001234567"))
    await chat.expect(p["current"].format("+79001234567"))
    chat.say("  buyer@example.com ")
    await chat.expect(p["saved"].format("buyer@example.com"))
    assert chat.said(p["pay"]) == []  # a change alone requests no top-up
    chat.say("/topup")
    chat.press(await chat.expect(p["packages"]), p["package"])
    await chat.expect(p["pay"])
    assert chat.said(p["ask"]) == []
    requests = stack.events.of(TopUpRequested, telegram_id=chat.user.id)
    assert [(r.email, r.phone) for r in requests][-1] == ("buyer@example.com", None)

    chat.say("/receipt")
    await chat.expect(p["current"].format("buyer@example.com"))
    chat.say("/deletemydata")  # the contact is personal data: erased with the rest
    await chat.expect("/deletemydata")
    chat.press(await chat.expect("/deletemydata"), "🗑")
    stored = f"SELECT count(*) FROM gateway_receipt_contacts WHERE telegram_id = {chat.user.id}"

    async with engine_at(receipts_database_url) as engine:

        async def erased() -> bool:
            async with engine.connect() as connection:
                return (await connection.execute(text(stored))).scalar_one() == 0

        await eventually(erased)


@LANGUAGES
async def test_a_top_up_refused_for_want_of_a_contact_is_asked_for_and_requested_again(
    receipts_stack: Stack, language: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Receipts switched on after the gateway looked (it requested the top-up without a
    contact): billing refuses it, the bot asks for the contact and requests it again."""
    p = PHRASES[language]
    stack = receipts_stack
    chat = await started(stack, language)

    async def not_yet() -> bool:
        return False

    monkeypatch.setattr(stack.gateway.backends, "receipts", not_yet)
    chat.say("/topup")
    chat.press(await chat.expect(p["packages"]), p["package"])
    (failed,) = await stack.events.wait_for(PaymentFailed, telegram_id=chat.user.id)
    assert failed.reason == "receipt_contact_missing"
    (request,) = stack.events.of(TopUpRequested, telegram_id=chat.user.id)
    assert (request.email, request.phone) == (None, None)
    monkeypatch.undo()
    missing = await chat.expect(p["missing"])
    chat.press(missing, p["give"])
    await chat.expect(p["ask"])
    chat.say("buyer@example.org")
    await chat.expect(p["saved"].format("buyer@example.org"))
    await chat.expect(p["pay"])
    requests = stack.events.of(TopUpRequested, telegram_id=chat.user.id)
    assert [(r.package_id, r.email) for r in requests] == [
        ("small", None),
        ("small", "buyer@example.org"),
    ]


def test_contacts_are_checked_and_kept_as_a_receipt_takes_them() -> None:
    assert parse("+7 (900) 123-45-67") == "79001234567"
    assert parse("89001234567") == "79001234567"
    assert parse("9001234567") == "79001234567"
    assert parse("+44 20 7946 0958") == "442079460958"
    assert parse(" a.b@example.com ") == "a.b@example.com"
    for wrong in ("", "hello", "12345", "a@b", "a b@example.com", "+7 900 123 45 67 89 01 2"):
        assert parse(wrong) is None, wrong
