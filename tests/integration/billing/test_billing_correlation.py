"""Every event of one top-up carries the top-up request's id as its correlation id.

docs/subscribing.md promises that `correlation_id` is shared by every event one user's request
caused. PaymentSucceeded comes from the webhook or the reconciler, with no message to inherit a
correlation id from, so billing takes it from the payment's `request_id`; PaymentCreated takes
the same, whatever correlation id the TopUpRequested came with.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.app import Billing, Settings, build
from billing.settings import BillingSettings
from contracts.events import TopUpRequested
from messaging.publisher import EventPublisher
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import OUTBOX, eventually, open_account, post_webhook, scalar, send


async def envelopes(engine: AsyncEngine, routing_key: str, **data: Any) -> list[dict[str, Any]]:
    """Whole envelopes billing committed to its outbox under `routing_key` matching `data`."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(OUTBOX.c.envelope)
            .where(OUTBOX.c.routing_key == routing_key, OUTBOX.c.envelope["data"].contains(data))
            .order_by(OUTBOX.c.seq)
        )
        return [row[0] for row in rows]


async def top_up(
    billing_engine: AsyncEngine, sender: EventPublisher, user_id: int, telegram_id: int
) -> tuple[uuid.UUID, int, str]:
    """A TopUpRequested sent as the gateway sends it, and its PaymentCreated awaited:
    (request id, our payment id, YooKassa id)."""
    request = TopUpRequested(
        request_id=uuid.uuid4(),
        user_id=user_id,
        telegram_id=telegram_id,
        chat_id=telegram_id,
        package_id="small",
    )
    sent = await send(sender, request)
    assert sent.correlation_id != str(request.request_id)  # so billing's choice is what we see
    request_id = str(request.request_id)

    async def created() -> bool:
        return bool(await envelopes(billing_engine, "payment.created", request_id=request_id))

    await eventually(created)
    [envelope] = await envelopes(billing_engine, "payment.created", request_id=request_id)
    assert envelope["correlation_id"] == request_id
    payment_id = int(envelope["data"]["payment_id"])
    yookassa_id = await scalar(
        billing_engine, "SELECT yukassa_payment_id FROM payments WHERE id = :p", p=payment_id
    )
    return request.request_id, payment_id, str(yookassa_id)


async def test_payment_succeeded_and_failed_carry_the_top_up_request_id_as_correlation_id(
    billing: Billing,
    settings: Settings,
    sender: EventPublisher,
    billing_engine: AsyncEngine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    by_webhook = await top_up(billing_engine, sender, user_id, telegram_id)
    by_reconciler = await top_up(billing_engine, sender, user_id, telegram_id)
    canceled = await top_up(billing_engine, sender, user_id, telegram_id)

    fake_yookassa.set_status(by_webhook[2], "succeeded")
    assert await post_webhook(billing, fake_yookassa.notification(by_webhook[2])) == (200, "credit")
    fake_yookassa.set_status(canceled[2], "canceled")
    assert await post_webhook(billing, fake_yookassa.notification(canceled[2])) == (200, "cancel")

    fake_yookassa.set_status(by_reconciler[2], "succeeded")
    settings.billing = BillingSettings(reconcile_min_age_s=0, pending_expiry_s=3600)
    reconciling = build(settings)
    try:
        assert await reconciling.reconciler.run_once() >= 1
    finally:
        await reconciling.runtime.engine.dispose()

    for request_id, payment_id, _ in (by_webhook, by_reconciler):
        copies = await envelopes(billing_engine, "payment.succeeded", payment_id=payment_id)
        # v2 (the balance exact) and its v1 copy beside it, both of the request
        assert [(copy["version"], copy["correlation_id"]) for copy in copies] == [
            (2, str(request_id)),
            (1, str(request_id)),
        ]
    [failed] = await envelopes(billing_engine, "payment.failed", payment_id=canceled[1])
    assert failed["correlation_id"] == str(canceled[0])
