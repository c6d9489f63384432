"""Telegram Stars, the second payment rail, end to end in Russian and English: the real aiogram
gateway polling the sandbox Telegram (invoice, pre-checkout query, successful payment), billing
on the real broker and database crediting each charge once."""

from __future__ import annotations

import asyncio
import functools
import os
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing import accounts
from billing.domain import LedgerKind
from billing.refunds import RefundOutcome, refund_topup
from bot_gateway.settings import ConversationSettings
from contracts.events import (
    PaymentSucceeded,
    StarsPaymentReceived,
    StarsRefundRequested,
    StarsRefundSettled,
    TopUpRefunded,
)
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
        "refunded": "Пополнение возвращено: 50 ⭐ вернулись к вам, списано 100 кредитов. "
        "Баланс: 30.",
        "history_refund": "-100 · возврат пополнения",
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
        "refunded": "Your top-up was refunded: 50 ⭐ back to you, 100 credits taken back. "
        "Balance: 30.",
        "history_refund": "-100 · top-up refunded",
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


@LANGUAGES
async def test_an_operator_refunds_stars_whole_once_and_the_buyer_hears_of_it(
    stack: Stack, gateway_sessions: async_sessionmaker[AsyncSession], language: str
) -> None:
    """billing's refund use case → StarsRefundRequested → the gateway's refundStarPayment →
    StarsRefundSettled → the credits out through the ledger, the refund's rows, the notice and
    /history; asked again (same key, or the request delivered twice) nothing moves twice."""
    p = PHRASES[language]
    chat, charge, payment_id = await paid_in_stars(stack, language)
    spend = await spend_credits(stack, gateway_sessions, chat, 30)  # 130 left of 160

    refund = functools.partial(
        refund_topup,
        stack.billing.runtime.unit_of_work,
        stack.billing.topups._provider,
        stack.billing.topups._yookassa,
        payment_id=payment_id,
        reason="test",
    )
    part = await refund(key="part", amount_kopecks=20)
    assert part.outcome is RefundOutcome.not_refundable  # Telegram refunds a charge whole
    asked = await refund(key="whole")
    assert asked.outcome is RefundOutcome.pending
    assert (asked.amount_kopecks, asked.credits) == (50, 100)
    await chat.expect(p["refunded"])  # 50 ⭐ back, 100 credits taken back, balance 30
    assert stack.telegram.stars_charges[charge]["refunded"] is True
    assert spend == 130

    again = await refund(key="whole")
    assert again.outcome is RefundOutcome.refunded
    other = await refund(key="another")
    assert other.outcome is RefundOutcome.too_much
    # the request delivered again (billing asked twice): Telegram says the charge was refunded
    # already, which the gateway reports as refunded; billing applied it once
    (request,) = stack.events.of(StarsRefundRequested, telegram_payment_charge_id=charge)
    await stack.runner_publisher.publish(request)
    await stack.events.wait_for(StarsRefundSettled, 2, telegram_payment_charge_id=charge)
    settled = stack.events.of(StarsRefundSettled, telegram_payment_charge_id=charge)
    assert [event.refunded for event in settled] == [True, True]
    assert "CHARGE_ALREADY_REFUNDED" in settled[1].detail
    calls = [c for c in stack.telegram.calls if c.method == "refundStarPayment"
             and c.params.get("telegram_payment_charge_id") == charge]  # fmt: skip
    assert len(calls) == 2
    assert int(calls[0].params["user_id"]) == chat.user.id

    async def billing_took_both() -> bool:
        ids = ", ".join(f"'{e.id}'" for e, ev in stack.events.received
                        if isinstance(ev, StarsRefundSettled)
                        and ev.telegram_payment_charge_id == charge)  # fmt: skip
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
                    "SELECT amount, currency, status, payment_method, credits, refund_of "
                    "FROM payments WHERE user_id = :u AND payment_type = 'refund' "
                    "AND refund_of IS NOT NULL"
                ),
                {"u": user_id},
            )
        ).all()
    assert [
        (r.amount, r.currency, r.status.lower(), r.payment_method, r.credits, r.refund_of)
        for r in rows
    ] == [(50, "XTR", "succeeded", "telegram_stars", 100, payment_id)]
    ledger = (
        "SELECT amount FROM billing_ledger WHERE idempotency_key = 'topup_refund:" + charge + "'"
    )
    assert await scalar(gateway_sessions, ledger) == -100
    logs = (
        f"SELECT count(*) FROM payment_logs WHERE payment_id = '{charge}' "
        "AND status = 'refunded' AND amount = 50"
    )
    assert await count(gateway_sessions, logs) == 1
    balance = f"SELECT balance FROM users WHERE user_id = {user_id}"
    assert await scalar(gateway_sessions, balance) == 30
    assert len(stack.events.of(TopUpRefunded, telegram_id=chat.user.id)) == 1
    assert len(chat.said(p["refunded"])) == 1
    chat.say("/history")
    await chat.expect(p["history_refund"])


@LANGUAGES
async def test_a_stars_refund_telegram_refuses_is_recorded_and_moves_nothing(
    stack: Stack, gateway_sessions: async_sessionmaker[AsyncSession], language: str
) -> None:
    p = PHRASES[language]
    chat, charge, payment_id = await paid_in_stars(stack, language)
    del stack.telegram.stars_charges[charge]  # Telegram knows no such charge: CHARGE_NOT_FOUND
    refund = functools.partial(
        refund_topup,
        stack.billing.runtime.unit_of_work,
        stack.billing.topups._provider,
        stack.billing.topups._yookassa,
        payment_id=payment_id,
        key="refused",
        reason="test",
    )
    assert (await refund()).outcome is RefundOutcome.pending
    (settled,) = await stack.events.wait_for(
        StarsRefundSettled, 1, telegram_payment_charge_id=charge
    )
    assert settled.refunded is False
    assert "CHARGE_NOT_FOUND" in settled.detail

    async def closed() -> bool:
        return (await refund()).outcome is RefundOutcome.rejected

    await eventually(closed)
    status = f"SELECT status FROM payments WHERE refund_of = {payment_id}"
    assert str(await scalar(gateway_sessions, status)).lower() == "failed"
    logs = (
        f"SELECT count(*) FROM payment_logs WHERE payment_id = '{charge}' "
        "AND status = 'refund_failed'"
    )
    assert await count(gateway_sessions, logs) == 1
    balance = f"SELECT balance FROM users WHERE telegram_id = {chat.user.id}"
    assert await scalar(gateway_sessions, balance) == 160
    assert stack.events.of(TopUpRefunded, telegram_id=chat.user.id) == []
    assert chat.said(p["refunded"]) == []


async def paid_in_stars(stack: Stack, language: str) -> tuple[Chat, str, int]:
    """A user who bought the 100-credit Stars package: the chat, the charge, our payment id."""
    p = PHRASES[language]
    chat = await started_chat(stack, language)
    chat.say("/topup")
    chat.press(await chat.expect(p["packages"]), p["stars_package"])
    invoice = await chat.expect(p["invoice"], method="sendInvoice")
    assert invoice.message_id is not None
    charge = await stack.telegram.pay_invoice(chat.user, invoice.message_id)
    assert charge is not None
    await chat.expect(p["paid"])
    (payment_id,) = [
        event.payment_id for event in stack.events.of(PaymentSucceeded, telegram_id=chat.user.id)
    ]
    return chat, charge, payment_id


async def spend_credits(
    stack: Stack, gateway_sessions: async_sessionmaker[AsyncSession], chat: Chat, credits: int
) -> int:
    """Take `credits` as a job would (billing's ledger, as the backend API's adjustment does):
    the balance after."""
    async with stack.billing.runtime.unit_of_work() as uow:
        moved = await accounts.apply(
            uow,
            *accounts.move(
                -credits, f"test:{chat.user.id}", LedgerKind.adjustment, telegram_id=chat.user.id
            ),
        )
    assert moved is not None
    return int(moved.balance_after)


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


async def test_the_operators_cli_refunds_stars_and_waits_for_telegrams_answer(
    stack: Stack, gateway_database_url: str
) -> None:
    chat, charge, payment_id = await paid_in_stars(stack, "en")
    args = ("billing", "refund", "--charge", charge, "--key", "cli")  # as the buyer quotes it
    env = {**os.environ, "DATABASE_URL": gateway_database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imagebot", *args, "--reason", "complaint", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    assert f"refund of payment {payment_id} (key cli): refunded, 50 XTR, 100 credits" in output
    assert stack.telegram.stars_charges[charge]["refunded"] is True
    await chat.expect(PHRASES["en"]["refunded"].replace("Balance: 30", "Balance: 60"))
