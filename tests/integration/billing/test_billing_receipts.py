"""54-FZ receipts: a receipts-on shop against a sandbox YooKassa that demands them, as the
real API does for a shop with YooKassa's receipts or a cash register connected through it."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.app import Settings, build
from billing.refunds import RefundOutcome, refund_topup
from billing.settings import YooKassaSettings
from contracts.events import TopUpRequested, TopUpRequestedV1
from messaging.publisher import EventPublisher
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import (
    balance_of,
    eventually,
    open_account,
    outbox,
    post_webhook,
    scalar,
    send,
)

Engine = AsyncEngine


def receipts_on(fake: YooKassaSandbox) -> YooKassaSettings:
    return YooKassaSettings(
        api_url=fake.api_url,
        timeout_s=5,
        receipts=True,
        tax_system_code=2,
        vat_code=1,
        payment_subject="service",
        payment_mode="full_payment",
    )


async def test_a_receipts_on_shop_tops_up_and_refunds_end_to_end(
    settings: Settings,
    sender: EventPublisher,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    fake_yookassa.require_receipts = True
    settings.yookassa = receipts_on(fake_yookassa)
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    with_email, with_phone, without = (uuid.uuid4() for _ in range(3))
    base = {"user_id": user_id, "telegram_id": telegram_id, "chat_id": telegram_id}
    service = build(settings)
    async with service.app:
        await send(sender, TopUpRequested(request_id=with_email, package_id="small",
                                          email="buyer@example.org", **base))  # fmt: skip
        await send(sender, TopUpRequested(request_id=with_phone, package_id="medium",
                                          phone="79001234567", **base))  # fmt: skip
        await send(sender, TopUpRequestedV1(request_id=without, package_id="small", **base))

        async def answered() -> bool:
            created = await outbox(billing_engine, "payment.created", user_id=user_id)
            failed = await outbox(billing_engine, "payment.failed", user_id=user_id)
            return len(created) == 2 and len(failed) == 1

        await eventually(answered)
    [failed] = await outbox(billing_engine, "payment.failed", user_id=user_id)
    assert (failed["request_id"], failed["reason"]) == (str(without), "receipt_contact_missing")
    assert len(fake_yookassa.payments) == 2  # the one without a contact never reached YooKassa
    by_customer = {next(iter(r["customer"].items())): r for r in fake_yookassa.receipts}
    small = by_customer[("email", "buyer@example.org")]
    assert small["tax_system_code"] == 2
    [item] = small["items"]
    assert float(item.pop("quantity")) == 1  # the SDK writes it as it likes ("1.0")
    assert item == {
        "description": "Пополнение баланса: 100 кредитов",
        "amount": {"value": "100.00", "currency": "RUB"},
        "vat_code": 1,
        "payment_subject": "service",
        "payment_mode": "full_payment",
    }
    assert by_customer[("phone", "79001234567")]["items"][0]["amount"]["value"] == "500.00"

    # Paid, then refunded: the refund carries its receipt, to the same buyer.
    [yookassa_id] = [
        p["id"] for p in fake_yookassa.payments.values()
        if p["metadata"]["request_id"] == str(with_email)
    ]  # fmt: skip
    fake_yookassa.set_status(yookassa_id, "succeeded")
    assert (await post_webhook(service, fake_yookassa.notification(yookassa_id)))[0] == 200
    payment_id = await scalar(
        billing_engine, "SELECT id FROM payments WHERE request_id = :r", r=with_email
    )
    result = await refund_topup(
        service.runtime.unit_of_work,
        service.topups._provider,
        settings.yookassa,
        payment_id=payment_id,
        key="receipt-refund",
    )
    assert result.outcome is RefundOutcome.refunded
    refund_receipt = fake_yookassa.receipts[-1]
    assert refund_receipt["customer"] == {"email": "buyer@example.org"}
    assert refund_receipt["items"][0]["amount"] == {"value": "100.00", "currency": "RUB"}
    assert await balance_of(billing_engine, user_id) == 60
    await service.runtime.engine.dispose()


async def test_a_shop_whose_yookassa_demands_receipts_fails_without_them(
    settings: Settings,
    sender: EventPublisher,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    """Receipts off here but demanded by the shop's YooKassa: what every top-up met before."""
    fake_yookassa.require_receipts = True
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    request = TopUpRequested(request_id=uuid.uuid4(), user_id=user_id, telegram_id=telegram_id,
                             chat_id=telegram_id, package_id="small",
                             email="buyer@example.org")  # fmt: skip
    service = build(settings)
    async with service.app:
        await send(sender, request)

        async def failed() -> bool:
            found = await outbox(
                billing_engine, "payment.failed", request_id=str(request.request_id)
            )
            return bool(found)

        await eventually(failed)
    [event] = await outbox(billing_engine, "payment.failed", request_id=str(request.request_id))
    assert event["reason"] == "provider_rejected"
    assert fake_yookassa.payments == {}
