"""Refunds of Telegram Stars on billing's side: the refund use case opens the refund row and asks
the gateway (StarsRefundRequested, through the outbox); the gateway's answer (StarsRefundSettled)
takes the credits back through the ledger once, never below zero, the shortfall recorded, with
the payment_logs row and TopUpRefunded; a refusal closes the row and moves nothing."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billing import payments
from billing.app import Billing
from billing.refunds import (
    RefundOutcome,
    RefundResult,
    refund_topup,
    request_id,
    where_it_stands,
)
from contracts.events import StarsPaymentReceived, StarsRefundSettled
from messaging.publisher import EventPublisher
from support.billing_harness import balance_of, eventually, fund, open_account, scalar

Engine = AsyncEngine


async def paid_in_stars(
    billing: Billing, engine: Engine, sender: EventPublisher
) -> tuple[int, int, str, int]:
    """A new account that bought 100 credits for 50 Stars: (user, telegram id, charge, payment)."""
    user_id, telegram_id = await open_account(engine, balance=0, welcome=0)
    charge = f"stxTEST{uuid.uuid4().hex}"
    await sender.publish(
        StarsPaymentReceived(
            telegram_payment_charge_id=charge,
            user_id=user_id,
            telegram_id=telegram_id,
            chat_id=telegram_id,
            package_id="stars_small",
            amount=50,
            credits=100,
        )
    )

    async def credited() -> bool:
        return await balance_of(engine, user_id) == 100

    await eventually(credited)
    payment_id = await scalar(
        engine,
        "SELECT id FROM payments WHERE user_id = :u AND payment_type = 'payment'",
        u=user_id,
    )
    return user_id, telegram_id, charge, int(payment_id)


async def refund(
    billing: Billing, payment_id: int, key: str, amount: int | None = None
) -> RefundResult:
    return await refund_topup(
        billing.runtime.unit_of_work,
        billing.topups._provider,
        billing.topups._yookassa,
        payment_id=payment_id,
        key=key,
        amount_kopecks=amount,
        reason="test",
    )


async def outbox(
    engine: Engine, routing_key: str, charge_or_refund: str, field: str | None = None
) -> list[dict[str, Any]]:
    """The data of the billing outbox's events of one type that mention `charge_or_refund`
    (in `field`, when given: other tests' events share the database, and their ids and
    amounts may spell the same number)."""
    async with engine.connect() as connection:
        rows = (
            await connection.exec_driver_sql(
                "SELECT envelope FROM billing_outbox WHERE routing_key = $1 ORDER BY seq",
                (routing_key,),
            )
        ).all()
    found = [row.envelope["data"] for row in rows]
    if field is not None:
        return [data for data in found if str(data.get(field)) == charge_or_refund]
    return [data for data in found if charge_or_refund in {str(v) for v in data.values()}]


async def settled(engine: Engine, refund_id: int, status: str) -> None:
    async def there() -> bool:
        now = await scalar(engine, "SELECT status::text FROM payments WHERE id = :r", r=refund_id)
        return str(now).lower() == status

    await eventually(there)


async def test_a_stars_refund_asks_the_gateway_and_its_answer_applies_once(
    billing: Billing, billing_engine: Engine, sender: EventPublisher
) -> None:
    user_id, telegram_id, charge, payment_id = await paid_in_stars(billing, billing_engine, sender)
    await fund(billing_engine, user_id, -40, expect=60)  # the buyer spent 40 of the 100

    assert (await refund(billing, payment_id, "part", 20)).outcome is RefundOutcome.not_refundable
    asked = await refund(billing, payment_id, "whole")
    assert (asked.outcome, asked.amount_kopecks, asked.credits, asked.currency) == (
        RefundOutcome.pending,
        50,
        100,
        "XTR",
    )
    assert asked.refund_payment_id is not None
    (request,) = await outbox(billing_engine, "payment.stars_refund_requested", charge)
    assert (request["telegram_id"], request["amount"], request["payment_id"]) == (
        telegram_id,
        50,
        payment_id,
    )
    assert (await refund(billing, payment_id, "other")).outcome is RefundOutcome.too_much
    assert await balance_of(billing_engine, user_id) == 60  # nothing moves before Telegram

    answer = StarsRefundSettled(
        refund_payment_id=asked.refund_payment_id,
        telegram_id=telegram_id,
        telegram_payment_charge_id=charge,
        refunded=True,
    )
    await sender.publish(answer)
    await sender.publish(answer)  # answered twice (the request was delivered twice)
    await settled(billing_engine, asked.refund_payment_id, "succeeded")
    stands = await where_it_stands(billing.runtime.unit_of_work, payment_id, "whole")
    assert stands is not None
    assert stands.outcome is RefundOutcome.refunded

    async def both_taken() -> bool:
        taken = await scalar(
            billing_engine,
            "SELECT count(*) FROM billing_inbox WHERE event_type = 'payment.stars_refund_settled'"
            " AND received_at > now() - interval '1 minute'",
        )
        return int(taken) >= 2

    await eventually(both_taken)
    assert await balance_of(billing_engine, user_id) == 0  # never below zero
    taken = await scalar(
        billing_engine,
        "SELECT amount FROM billing_ledger WHERE idempotency_key = :k",
        k=f"topup_refund:{charge}",
    )
    assert taken == -60
    reason = await scalar(
        billing_engine,
        "SELECT reason FROM billing_ledger WHERE idempotency_key = :k",
        k=f"topup_refund:{charge}",
    )
    assert reason == f"refund {charge}: 100 credits bought back, 40 short"
    logs = await scalar(
        billing_engine,
        "SELECT count(*) FROM payment_logs WHERE payment_id = :c AND status = 'refunded' "
        "AND amount = 50",
        c=charge,
    )
    assert logs == 1
    async with billing_engine.connect() as connection:
        shortfalls = list(await connection.execute(payments.refund_shortfalls()))
    assert [(r.payment, r.credits, r.taken, r.shortfall) for r in shortfalls
            if r.refund == asked.refund_payment_id] == [(payment_id, 100, 60, 40)]  # fmt: skip

    async def told() -> bool:
        return bool(
            await outbox(
                billing_engine,
                "payment.refunded",
                str(asked.refund_payment_id),
                "refund_payment_id",
            )
        )

    await eventually(told)
    (notice,) = await outbox(
        billing_engine, "payment.refunded", str(asked.refund_payment_id), "refund_payment_id"
    )
    assert (notice["credits"], notice["shortfall"], notice["currency"]) == (60, 40, "XTR")
    assert Decimal(str(notice["balance"])) == 0  # "0" as an exact balance is written


async def test_a_stars_refund_telegram_refused_closes_its_row_and_can_be_asked_anew(
    billing: Billing, billing_engine: Engine, sender: EventPublisher
) -> None:
    user_id, telegram_id, charge, payment_id = await paid_in_stars(billing, billing_engine, sender)
    first = await refund(billing, payment_id, "first")
    assert first.outcome is RefundOutcome.pending
    assert first.refund_payment_id is not None
    await sender.publish(
        StarsRefundSettled(
            refund_payment_id=first.refund_payment_id,
            telegram_id=telegram_id,
            telegram_payment_charge_id=charge,
            refunded=False,
            detail="Bad Request: CHARGE_NOT_FOUND",
        )
    )
    await settled(billing_engine, first.refund_payment_id, "failed")
    assert (await refund(billing, payment_id, "first")).outcome is RefundOutcome.rejected
    logs = await scalar(
        billing_engine,
        "SELECT count(*) FROM payment_logs WHERE payment_id = :c AND status = 'refund_failed'",
        c=charge,
    )
    assert logs == 1
    assert await balance_of(billing_engine, user_id) == 100
    assert (
        await outbox(
            billing_engine, "payment.refunded", str(first.refund_payment_id), "refund_payment_id"
        )
        == []
    )

    again = await refund(billing, payment_id, "second")  # a refused refund holds nothing back
    assert again.outcome is RefundOutcome.pending
    assert again.refund_payment_id not in (None, first.refund_payment_id)
    assert len(await outbox(billing_engine, "payment.stars_refund_requested", charge)) == 2


async def test_a_stars_top_up_with_no_charge_id_recorded_is_refused_not_retried(
    billing: Billing, billing_engine: Engine, sender: EventPublisher
) -> None:
    # an adopted Stars row, say: Telegram refunds by the charge's id alone, so there is nothing
    # to ask it, and no refund row is opened
    user_id, _, _, payment_id = await paid_in_stars(billing, billing_engine, sender)
    async with billing_engine.begin() as connection:
        await connection.exec_driver_sql(
            "UPDATE payments SET payment_method_details = NULL WHERE id = $1", (payment_id,)
        )
    result = await refund(billing, payment_id, "whole")
    assert (result.outcome, result.detail) == (
        RefundOutcome.not_refundable,
        "no Telegram charge id is recorded for it",
    )
    refunds = await scalar(
        billing_engine,
        "SELECT count(*) FROM payments WHERE user_id = :u AND payment_type = 'refund'",
        u=user_id,
    )
    assert (refunds, await balance_of(billing_engine, user_id)) == (0, 100)


async def test_two_stars_refunds_of_one_charge_asked_at_once_leave_neither_pending(
    billing: Billing, billing_engine: Engine, sender: EventPublisher
) -> None:
    """Two operators refund the same Stars top-up at once: both read it unrefunded, so each
    opens its row and asks Telegram. Telegram refunds the charge once and answers the second
    CHARGE_ALREADY_REFUNDED, which the gateway reports as refunded: the credits come out
    once, and the second row is closed, not left pending for ever."""
    user_id, telegram_id, charge, payment_id = await paid_in_stars(billing, billing_engine, sender)
    first = await refund(billing, payment_id, "operator-a")
    async with billing.runtime.unit_of_work() as uow:  # the second, opened before the first
        topup = await payments.find(uow, payments.topup_by_id(payment_id))
        assert topup is not None
        await uow.commit_alone(
            payments.open_refund(
                topup,
                request_id=request_id(payment_id, "operator-b"),
                amount_kopecks=50,
                credits=100,
                description="test",
            )
        )
    second = await refund(billing, payment_id, "operator-b")
    assert (first.outcome, second.outcome) == (RefundOutcome.pending, RefundOutcome.pending)
    assert second.refund_payment_id not in (None, first.refund_payment_id)

    for row in (first.refund_payment_id, second.refund_payment_id):
        assert row is not None
        await sender.publish(
            StarsRefundSettled(
                refund_payment_id=row,
                telegram_id=telegram_id,
                telegram_payment_charge_id=charge,
                refunded=True,
            )
        )
    assert first.refund_payment_id is not None
    assert second.refund_payment_id is not None
    await settled(billing_engine, first.refund_payment_id, "succeeded")
    await settled(billing_engine, second.refund_payment_id, "failed")
    assert await balance_of(billing_engine, user_id) == 0
    entries = "SELECT count(*) FROM billing_ledger WHERE kind = 'topup_refund' AND user_id = :u"
    assert await scalar(billing_engine, entries, u=user_id) == 1
    again = await where_it_stands(billing.runtime.unit_of_work, payment_id, "operator-b")
    assert again is not None
    assert again.outcome is RefundOutcome.rejected
