"""The user hears of money moved by an operator, in their language: a YooKassa top-up refunded
(TopUpRefunded, with what had been spent already) and an adjustment of their credits
(CreditsAdjusted, from the backend API's command); both show in /history, each once."""

from __future__ import annotations

import uuid

import pytest

from billing.refunds import RefundOutcome, refund_topup
from contracts.events import (
    CreditsAdjusted,
    CreditsAdjustmentRequested,
    PaymentCreated,
    TopUpRefunded,
)
from support.gateway_harness import Chat, Stack, new_user

PHRASES = {
    "ru": {
        "balance": "Ваш баланс: {}",
        "packages": "Выберите пакет",
        "package": "100 кредитов за 100 ₽",
        "paid": "Платёж получен: +100 кредитов. Баланс: 160",
        "refunded": "Пополнение возвращено: 100 ₽ вернулись к вам, списано 100 кредитов. "
        "Баланс: 0.",
        "part_refunded": "Пополнение возвращено: 40.50 ₽ вернулись к вам, списано 40 кредитов. "
        "Баланс: 120.",
        "shortfall": "Пополнение возвращено: 100 ₽ вернулись к вам, списано 40 кредитов. "
        "60 из них уже были потрачены. Баланс: 0.",
        "added": "Поддержка начислила вам 25 кредитов. Баланс: 85.",
        "taken": "Поддержка списала с вашего баланса 5 кредитов. Баланс: 80.",
        "history": ["+25 · поддержка", "-5 · поддержка", "Движение кредитов:"],
        "history_refund": "-40 · возврат пополнения",
    },
    "en": {
        "balance": "Your balance: {}",
        "packages": "Choose a package",
        "package": "100 credits for 100 ₽",
        "paid": "Payment received: +100 credits. Balance: 160",
        "refunded": "Your top-up was refunded: 100 ₽ back to you, 100 credits taken back. "
        "Balance: 0.",
        "part_refunded": "Your top-up was refunded: 40.50 ₽ back to you, 40 credits taken back. "
        "Balance: 120.",
        "shortfall": "Your top-up was refunded: 100 ₽ back to you, 40 credits taken back. "
        "60 of its credits had been spent already. Balance: 0.",
        "added": "Support added 25 credits to your balance. Balance: 85.",
        "taken": "Support took 5 credits from your balance. Balance: 80.",
        "history": ["+25 · by support", "-5 · by support", "Credits in and out:"],
        "history_refund": "-40 · top-up refunded",
    },
}
LANGUAGES = pytest.mark.parametrize("language", ["ru", "en"])


async def topped_up(stack: Stack, language: str) -> tuple[Chat, int]:
    p = PHRASES[language]
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(p["balance"].format(60))
    chat.say("/topup")
    chat.press(await chat.expect(p["packages"]), p["package"])
    (created,) = await stack.events.wait_for(PaymentCreated, chat_id=chat.user.id)
    chat.mark()
    assert await stack.pay(created.payment_id) == 200
    await chat.expect(p["paid"])
    return chat, created.payment_id


async def refund(stack: Stack, payment_id: int, key: str, kopecks: int | None = None) -> None:
    result = await refund_topup(
        stack.billing.runtime.unit_of_work,
        stack.billing.topups._provider,
        stack.billing.topups._yookassa,
        payment_id=payment_id,
        key=key,
        amount_kopecks=kopecks,
        reason="test",
    )
    assert result.outcome is RefundOutcome.refunded


async def adjust(stack: Stack, chat: Chat, credits: int) -> uuid.UUID:
    request_id = uuid.uuid4()
    await stack.runner_publisher.publish(
        CreditsAdjustmentRequested(
            request_id=request_id,
            operator="support.anna",
            telegram_id=chat.user.id,
            credits=credits,
            reason="test",
        )
    )
    return request_id


@LANGUAGES
async def test_a_refunded_top_up_is_told_with_what_was_spent_and_shows_in_history(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat, payment_id = await topped_up(stack, language)
    chat.mark()
    await refund(stack, payment_id, "part", 4050)  # 40.50 ₽ of 100: 40 credits
    await chat.expect(p["part_refunded"])
    chat.say("/history")
    await chat.expect(p["history_refund"])

    chat.mark()
    await adjust(stack, chat, -120)  # the buyer spends it all
    await stack.events.wait_for(CreditsAdjusted, telegram_id=chat.user.id)
    await refund(stack, payment_id, "rest")  # 59.50 ₽: the other 60 credits, none left
    (_, rest) = await stack.events.wait_for(TopUpRefunded, 2, telegram_id=chat.user.id)
    assert (rest.credits, rest.shortfall, rest.balance, rest.currency) == (0, 60, 0, "RUB")
    await chat.expect("59.50 ₽")
    assert len(chat.said("40.50 ₽")) == 0  # each refund told once


@LANGUAGES
async def test_a_whole_refund_after_spending_says_the_shortfall(
    stack: Stack, language: str
) -> None:
    p = PHRASES[language]
    chat, payment_id = await topped_up(stack, language)
    await adjust(stack, chat, -120)  # 40 of the 160 left
    await stack.events.wait_for(CreditsAdjusted, telegram_id=chat.user.id)
    chat.mark()
    await refund(stack, payment_id, "whole")
    await chat.expect(p["shortfall"])


@LANGUAGES
async def test_an_operators_adjustment_is_told_each_way_once(stack: Stack, language: str) -> None:
    p = PHRASES[language]
    chat = Chat(stack, new_user(language))
    chat.say("/start")
    await chat.expect(p["balance"].format(60))
    chat.mark()
    await adjust(stack, chat, 25)
    await chat.expect(p["added"])
    await adjust(stack, chat, -5)
    await chat.expect(p["taken"])
    chat.say("/history")
    history = await chat.expect(p["history"][2])
    for line in p["history"]:
        assert line in history.text
