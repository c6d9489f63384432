"""Telegram Stars, the second payment rail, end to end in Russian and English: the real aiogram
gateway polling the sandbox Telegram (invoice, pre-checkout query, successful payment), billing
on the real broker and database crediting each charge once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.refunds import RefundOutcome, refund_topup
from bot_gateway.settings import ConversationSettings
from contracts.events import PaymentSucceeded, StarsPaymentReceived
from support.gateway_harness import MODERATION, Chat, Stack, new_user
from support.messaging import count, eventually, scalar

PHRASES = {
    "ru": {
        "balance": "Ваш баланс: {}",
        "packages": "Выберите пакет",
        "stars_package": "100 кредитов за 50 ⭐",
        "rubles_package": "100 кредитов за 100 ₽",
        "invoice": "100 кредитов",
        "description": "оплата в Telegram Stars",
        "paid": "Платёж получен: +100 кредитов. Баланс: 160",
        "refused_package": "Этот пакет больше не продаётся",
        "refused_account": "Сначала откройте бота командой /start",
        "banned": "Бот для вас закрыт",
    },
    "en": {
        "balance": "Your balance: {}",
        "packages": "Choose a package",
        "stars_package": "100 credits for 50 ⭐",
        "rubles_package": "100 credits for 100 ₽",
        "invoice": "100 credits",
        "description": "paid in Telegram Stars",
        "paid": "Payment received: +100 credits. Balance: 160",
        "refused_package": "This package is no longer offered",
        "refused_account": "Open the bot with /start first",
        "banned": "The bot is closed to you",
    },
}
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])


async def started_chat(stack: Stack, language: str) -> Chat:
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(PHRASES[language]["balance"].format(60))
    return chat


@LANGUAGES
async def test_a_paid_invoice_credits_once_even_delivered_twice(
    stack: Stack, gateway_sessions: async_sessionmaker[AsyncSession], language: str
) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.say("/topup")
    packages = await chat.expect(p["packages"])
    assert packages.button(p["rubles_package"])  # both rails on one menu
    chat.press(packages, p["stars_package"])
    invoice = await chat.expect(p["invoice"], method="sendInvoice")
    assert invoice.params["currency"] == "XTR"
    assert invoice.params.get("provider_token", "") == ""
    assert p["description"] in invoice.params["description"]
    assert invoice.message_id is not None

    charge = await stack.telegram.pay_invoice(chat.user, invoice.message_id)
    assert charge is not None, "the gateway refused the pre-checkout of a valid invoice"
    await chat.expect(p["paid"])

    chat.mark()
    stack.telegram.successful_payment(chat.user, charge)  # Telegram delivers it again
    await stack.events.wait_for(StarsPaymentReceived, 2, telegram_payment_charge_id=charge)
    ids = ", ".join(
        f"'{envelope.id}'"
        for envelope, event in stack.events.received
        if isinstance(event, StarsPaymentReceived) and event.telegram_payment_charge_id == charge
    )

    async def billing_took_both() -> bool:
        taken = f"SELECT count(*) FROM billing_inbox WHERE event_id IN ({ids})"
        return await count(gateway_sessions, taken) == 2

    await eventually(billing_took_both)
    user_id = await scalar(
        gateway_sessions, f"SELECT user_id FROM users WHERE telegram_id = {chat.user.id}"
    )
    async with gateway_sessions() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT amount, currency, status, payment_method, credits, paid_at "
                    "FROM payments WHERE user_id = :u"
                ),
                {"u": user_id},
            )
        ).all()
    assert [
        (r.amount, r.currency, r.status.lower(), r.payment_method, r.credits) for r in rows
    ] == [(50, "XTR", "succeeded", "telegram_stars", 100)]
    assert rows[0].paid_at is not None
    ledger = f"SELECT count(*) FROM billing_ledger WHERE idempotency_key = 'stars:{charge}'"
    assert await count(gateway_sessions, ledger) == 1
    logs = f"SELECT count(*) FROM payment_logs WHERE payment_id = '{charge}' AND amount = 50"
    assert await count(gateway_sessions, logs) == 1
    balance = f"SELECT balance FROM users WHERE user_id = {user_id}"
    assert await scalar(gateway_sessions, balance) == 160
    assert len(stack.events.of(PaymentSucceeded, telegram_id=chat.user.id)) == 1
    assert chat.said(p["paid"]) == []
    chat.say("/balance")
    await chat.expect(p["balance"].format(160))

    # billing's refund command cannot refund Stars yet (the gateway holds the bot token): it
    # says so and moves nothing
    (payment_id,) = [
        event.payment_id for event in stack.events.of(PaymentSucceeded, telegram_id=chat.user.id)
    ]
    refused = await refund_topup(
        stack.billing.runtime.unit_of_work,
        stack.billing.topups._provider,
        stack.billing.topups._yookassa,
        payment_id=payment_id,
        key="stars",
        reason="test",
    )
    assert refused.outcome is RefundOutcome.not_refundable
    assert "Telegram Stars" in refused.detail
    assert await scalar(gateway_sessions, balance) == 160
    refunds = f"SELECT count(*) FROM payments WHERE refund_of = {payment_id}"
    assert await count(gateway_sessions, refunds) == 0


@LANGUAGES
async def test_a_pre_checkout_for_an_unknown_package_is_refused_with_a_reason(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    me = chat.user.id
    telegram = stack.telegram

    unknown = telegram.pre_checkout(chat.user, f"stars:no_such_package:50:100:{me}", 50)
    answer = await telegram.pre_checkout_answer(unknown)
    assert str(answer.params["ok"]).lower() == "false"
    assert p["refused_package"] in answer.params["error_message"]

    cheaper = telegram.pre_checkout(chat.user, f"stars:stars_small:1:100:{me}", 1)
    answer = await telegram.pre_checkout_answer(cheaper)
    assert str(answer.params["ok"]).lower() == "false"
    assert p["refused_package"] in answer.params["error_message"]

    stranger = new_user(language)  # never opened the bot
    theirs = telegram.pre_checkout(stranger, f"stars:stars_small:50:100:{stranger.id}", 50)
    answer = await telegram.pre_checkout_answer(theirs)
    assert str(answer.params["ok"]).lower() == "false"
    assert p["refused_account"] in answer.params["error_message"]

    valid = telegram.pre_checkout(chat.user, f"stars:stars_small:50:100:{me}", 50)
    answer = await telegram.pre_checkout_answer(valid)
    assert str(answer.params["ok"]).lower() == "true"


@LANGUAGES
async def test_an_invoice_paid_after_a_ban_is_still_credited(
    stack: Stack, gateway_sessions: async_sessionmaker[AsyncSession], language: str
) -> None:
    """Telegram takes the Stars of an invoice sent before the ban: they are credited."""
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.say("/topup")
    chat.press(await chat.expect(p["packages"]), p["stars_package"])
    invoice = await chat.expect(p["invoice"], method="sendInvoice")
    assert invoice.message_id is not None
    async with gateway_sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO gateway_restrictions (telegram_id, banned_reason, banned_by) "
                "VALUES (:t, 'test', 'test')"
            ),
            {"t": chat.user.id},
        )

    await asyncio.sleep(MODERATION.standing_cache_s + 0.5)  # the gate's remembered standing
    chat.say("/balance")
    await chat.expect(p["banned"])  # the gate stops everything else from this user now
    chat.mark()
    assert await stack.telegram.pay_invoice(chat.user, invoice.message_id) is not None
    await chat.expect(p["paid"])


POLICIES = {
    "ru": {
        "/paysupport": "По вопросам оплаты напишите оператору бота",
        "/terms": "Кредиты оплачивают обработку и создание изображений",
        "/privacy": "Бот хранит ваш Telegram id",
    },
    "en": {
        "/paysupport": "Questions about a payment: write to the bot's operator",
        "/terms": "Credits pay for editing and drawing images",
        "/privacy": "The bot keeps your Telegram id",
    },
}


@LANGUAGES
async def test_paysupport_terms_and_privacy_answer_the_operators_texts(
    stack: Stack, language: str
) -> None:
    chat = await started_chat(stack, language)
    defaults = ConversationSettings()  # the harness configures none of these texts
    for command, policy in (("/paysupport", "paysupport"), ("/terms", "terms"),
                            ("/privacy", "privacy")):  # fmt: skip
        chat.say(command)
        answer = await chat.expect(POLICIES[language][command])
        assert answer.text == defaults.policy(policy, language)
