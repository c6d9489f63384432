"""Top-ups, the YooKassa webhook and reconciliation: the real SDK against a fake YooKassa API."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import payments
from billing.app import Billing, Settings, build
from billing.domain import creation_key
from billing.settings import BillingSettings, WebhookSettings
from billing.yookassa_gateway import PaymentDraft
from contracts.events import TopUpRequested
from messaging.publisher import EventPublisher
from messaging.settings import DatabaseSettings
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import (
    balance_of,
    eventually,
    execute,
    handled,
    ledger_sum,
    open_account,
    outbox,
    post_webhook,
    scalar,
    send,
)

Engine = AsyncEngine
YOOKASSA_ADDRESS = "185.71.76.10"  # inside YooKassa's published 185.71.76.0/27
CAPTURED_AT = datetime(2026, 12, 1, 9, 30, 15, tzinfo=UTC)


@pytest.fixture
async def idle_billing(settings: Settings) -> AsyncIterator[Billing]:
    """Billing built but not consuming: the webhook and loops are driven by the test."""
    service = build(settings)
    yield service
    await service.runtime.engine.dispose()


async def pending_payment(
    billing: Billing, engine: Engine, user_id: int, kopecks: int = 10000, credits: int = 100
) -> tuple[int, str]:
    """A top-up as billing leaves it after TopUpRequested: (our payment id, YooKassa id)."""
    request_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            payments.open_topup(
                request_id=request_id,
                user_id=user_id,
                amount_kopecks=kopecks,
                credits=credits,
                currency="RUB",
                description="test",
            )
        )
        local = payments.local((await connection.execute(payments.by_request(request_id))).one())
    gateway = billing.topups._provider
    remote = await gateway.create(
        PaymentDraft(
            kopecks,
            "RUB",
            "test",
            {"payment_id": str(local.id), "user_id": str(user_id)},
            "https://t.me/",
        ),
        creation_key(request_id),
    )
    attach = payments.attach_yookassa(local.id, remote.id, remote.confirmation_url or "")
    async with engine.begin() as connection:
        assert (await connection.execute(attach)).first() is not None
    return local.id, remote.id


async def test_a_topup_creates_one_yookassa_payment_however_often_it_is_delivered(
    billing: Billing,
    sender: EventPublisher,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    request = TopUpRequested(
        request_id=uuid.uuid4(),
        user_id=user_id,
        telegram_id=telegram_id,
        chat_id=telegram_id,
        package_id="medium",
    )
    fake_yookassa.fail_next(1)  # the first create fails on YooKassa's side: retried
    for _ in range(3):  # and the request itself arrives three times, under new event ids
        await send(sender, request)

    async def created() -> bool:
        found = await outbox(billing_engine, "payment.created", request_id=str(request.request_id))
        return bool(found)

    await eventually(created)
    await asyncio.sleep(0.5)
    [event] = await outbox(billing_engine, "payment.created", request_id=str(request.request_id))
    assert len(fake_yookassa.payments) == 1
    [remote] = fake_yookassa.payments.values()
    assert (event["amount_kopecks"], event["credits"]) == (50000, 550)
    assert event["confirmation_url"] == remote["confirmation"]["confirmation_url"]
    assert remote["amount"] == {"value": "500.00", "currency": "RUB"}
    assert remote["metadata"]["payment_id"] == str(event["payment_id"])
    assert remote["metadata"]["user_id"] == str(user_id)
    row = await scalar(
        billing_engine,
        "SELECT status::text || ' ' || yukassa_payment_id || ' ' || amount || ' ' || credits "
        "FROM payments WHERE request_id = :r",
        r=request.request_id,
    )
    assert row == f"pending {remote['id']} 50000 550"


async def test_an_unknown_package_fails_with_a_reason(
    billing: Billing, sender: EventPublisher, billing_engine: Engine
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    request_id = uuid.uuid4()
    await send(
        sender,
        TopUpRequested(
            request_id=request_id,
            user_id=user_id,
            telegram_id=telegram_id,
            chat_id=telegram_id,
            package_id="gold",
        ),
    )

    async def failed() -> bool:
        return bool(await outbox(billing_engine, "payment.failed", request_id=str(request_id)))

    await eventually(failed)
    [event] = await outbox(billing_engine, "payment.failed", request_id=str(request_id))
    assert event["reason"] == "unknown_package"
    count = "SELECT count(*) FROM payments WHERE request_id = :r"
    assert await scalar(billing_engine, count, r=request_id) == 0


async def test_the_same_success_notification_20_times_at_once_credits_once(
    idle_billing: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await pending_payment(idle_billing, billing_engine, user_id)
    fake_yookassa.set_status(yookassa_id, "succeeded", captured_at="2026-12-01T09:30:15.000Z")
    body = fake_yookassa.notification(yookassa_id)

    answers = await asyncio.gather(*(post_webhook(idle_billing, body) for _ in range(20)))

    assert {status for status, _ in answers} == {200}
    assert sorted(detail for _, detail in answers) == ["credit"] + ["done"] * 19
    assert await balance_of(billing_engine, user_id) == 160
    assert await ledger_sum(billing_engine, user_id) == 160
    [event] = await outbox(billing_engine, "payment.succeeded", payment_id=payment_id)
    assert (event["credits"], event["balance"], event["amount_kopecks"]) == (100, 160, 10000)
    # One spelling per method (YooKassa's bank_card is the customer's card), paid_at the
    # moment YooKassa captured the money, and the shop's net amount kept.
    paid_at = "SELECT paid_at FROM payments WHERE id = :p"
    assert await scalar(billing_engine, paid_at, p=payment_id) == CAPTURED_AT
    row = await scalar(
        billing_engine,
        "SELECT status::text || ' ' || payment_method || ' ' || income_amount "
        "FROM payments WHERE id = :p",
        p=payment_id,
    )
    assert row == "succeeded card 9700"  # 100.00 RUB less the sandbox's 3 % fee
    logs = "SELECT count(*) FROM payment_logs WHERE payment_id = :y AND status = 'succeeded'"
    assert await scalar(billing_engine, logs, y=yookassa_id) == 1


async def test_forged_or_malformed_notifications_credit_nothing(
    idle_billing: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    _, yookassa_id = await pending_payment(idle_billing, billing_engine, user_id)
    claims_success = fake_yookassa.notification(yookassa_id, "payment.succeeded")
    # The API still says pending: the body contradicts it.
    assert (await post_webhook(idle_billing, claims_success))[0] == 409
    fake_yookassa.set_status(yookassa_id, "succeeded")
    assert (await post_webhook(idle_billing, claims_success, client="203.0.113.9"))[0] == 403
    forged = fake_yookassa.notification(yookassa_id)
    forged["object"]["id"] = "2f000000-000f-5000-8000-000000000000"
    assert (await post_webhook(idle_billing, forged))[0] == 404
    assert (await post_webhook(idle_billing, b"{not json"))[0] == 400
    assert (
        await post_webhook(idle_billing, {"type": "notification", "event": "refund.succeeded"})
    )[0] == 400
    assert (await post_webhook(idle_billing, b"x" * 70_000))[0] == 413
    assert (await post_webhook(idle_billing, claims_success, content_type="text/plain"))[0] == 415
    # The API's amount differs from ours (a payment tampered with, or not ours after all).
    fake_yookassa.payments[yookassa_id]["amount"]["value"] = "1.00"
    status, detail = await post_webhook(idle_billing, claims_success)
    assert status == 422
    assert "amount" in detail
    assert await balance_of(billing_engine, user_id) == 60
    assert await scalar(
        billing_engine, "SELECT status::text FROM payments WHERE yukassa_payment_id = :y",
        y=yookassa_id,
    ) == "pending"  # fmt: skip


async def test_a_trusted_proxy_vouches_for_yookassa_and_nobody_else_does(
    settings: Settings, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    settings.webhook = WebhookSettings(trusted_proxies="127.0.0.1/32")  # YooKassa's own ranges
    service = build(settings)
    try:
        user_id, _ = await open_account(billing_engine, balance=0, welcome=0)
        _, yookassa_id = await pending_payment(service, billing_engine, user_id)
        fake_yookassa.set_status(yookassa_id, "succeeded")
        body = fake_yookassa.notification(yookassa_id)
        spoofed = {"X-Forwarded-For": f"{YOOKASSA_ADDRESS}, 198.51.100.7"}
        assert (await post_webhook(service, body, headers=spoofed))[0] == 403
        # A client claiming a YooKassa address directly, with no proxy in between: not believed.
        direct = {"X-Forwarded-For": YOOKASSA_ADDRESS}
        assert (await post_webhook(service, body, client="198.51.100.7", headers=direct))[0] == 403
        assert (
            await post_webhook(service, body, headers={"X-Forwarded-For": YOOKASSA_ADDRESS})
        ) == (
            200,
            "credit",
        )
        assert await balance_of(billing_engine, user_id) == 100
    finally:
        await service.runtime.engine.dispose()


async def test_a_cancel_after_success_takes_nothing_back(
    idle_billing: Billing,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await pending_payment(idle_billing, billing_engine, user_id)
    fake_yookassa.set_status(yookassa_id, "succeeded")
    assert await post_webhook(idle_billing, fake_yookassa.notification(yookassa_id)) == (
        200,
        "credit",
    )
    fake_yookassa.set_status(yookassa_id, "canceled")
    with caplog.at_level(logging.ERROR, logger="billing.services"):
        status, detail = await post_webhook(idle_billing, fake_yookassa.notification(yookassa_id))
    assert (status, detail) == (200, "conflict")
    assert "needs a human" in caplog.text
    assert await balance_of(billing_engine, user_id) == 160
    assert await outbox(billing_engine, "payment.failed", payment_id=payment_id) == []


async def test_a_canceled_payment_fails_once_and_credits_nothing(
    idle_billing: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await pending_payment(idle_billing, billing_engine, user_id)
    fake_yookassa.set_status(yookassa_id, "canceled")
    body = fake_yookassa.notification(yookassa_id)
    assert [await post_webhook(idle_billing, body) for _ in range(2)] == [
        (200, "cancel"),
        (200, "done"),
    ]
    [event] = await outbox(billing_engine, "payment.failed", payment_id=payment_id)
    assert event["reason"] == "expired_on_confirmation"
    assert await balance_of(billing_engine, user_id) == 60


async def test_reconciliation_credits_a_missed_webhook_and_closes_stale_payments(
    settings: Settings, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    settings.billing = BillingSettings(reconcile_min_age_s=0, pending_expiry_s=3600)
    service = build(settings)
    try:
        user_id, _ = await open_account(billing_engine, balance=60)
        paid_id, paid = await pending_payment(service, billing_engine, user_id)
        stale_id, _ = await pending_payment(service, billing_engine, user_id)
        waiting_id, _ = await pending_payment(service, billing_engine, user_id)
        fake_yookassa.set_status(paid, "succeeded")
        await _age(billing_engine, stale_id, hours=2)
        await service.reconciler.run_once()
        await service.reconciler.run_once()  # a second pass changes nothing
        statuses = await scalar(
            billing_engine,
            "SELECT string_agg(status::text, ',' ORDER BY id) FROM payments WHERE id IN (:a,:b,:c)",
            a=paid_id,
            b=stale_id,
            c=waiting_id,
        )
        assert statuses == "succeeded,cancelled,pending"
        assert await balance_of(billing_engine, user_id) == 160
        assert len(await outbox(billing_engine, "payment.succeeded", payment_id=paid_id)) == 1
        [expired] = await outbox(billing_engine, "payment.failed", payment_id=stale_id)
        assert expired["reason"] == "expired"
    finally:
        await service.runtime.engine.dispose()


async def _age(engine: Engine, payment_id: int, *, hours: int) -> None:
    await execute(
        engine,
        "UPDATE payments SET created_at = now() - make_interval(hours => :h) WHERE id = :p",
        h=hours,
        p=payment_id,
    )


async def test_unresolvable_payments_never_starve_a_missed_webhook(
    settings: Settings, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    """Rows the API cannot settle go to the back of the line; a creation that finished is kept."""
    settings.billing = BillingSettings(
        reconcile_min_age_s=0, pending_expiry_s=3600, reconcile_batch=2
    )
    service = build(settings)
    try:
        user_id, _ = await open_account(billing_engine, balance=0)
        broken = [await pending_payment(service, billing_engine, user_id) for _ in range(3)]
        for payment_id, _ in broken:  # YooKassa does not know these ids
            await execute(
                billing_engine,
                "UPDATE payments SET yukassa_payment_id = 'nobody-' || id WHERE id = :p",
                p=payment_id,
            )
        paid_id, paid = await pending_payment(service, billing_engine, user_id)
        fake_yookassa.set_status(paid, "succeeded")
        for _ in range(20):  # other tests' pending rows share the database and the line
            await service.reconciler.run_once()
            if await outbox(billing_engine, "payment.succeeded", payment_id=paid_id):
                break
        assert len(await outbox(billing_engine, "payment.succeeded", payment_id=paid_id)) == 1
        assert await balance_of(billing_engine, user_id) == 100

        # A reconciler that read a row before its creation finished does not close it after.
        assert not await _close_unbound(billing_engine, paid_id)
    finally:
        await service.runtime.engine.dispose()


async def _close_unbound(engine: Engine, payment_id: int) -> bool:
    await execute(engine, "UPDATE payments SET status = 'pending' WHERE id = :p", p=payment_id)
    async with engine.begin() as connection:
        closed = payments.transition(payment_id, "failed", unbound_only=True)
        return (await connection.execute(closed)).first() is not None


async def topup_requests(engine: Engine, how_many: int) -> list[TopUpRequested]:
    """A small package asked for by each of `how_many` new accounts."""
    users = [await open_account(engine, balance=60) for _ in range(how_many)]
    return [
        TopUpRequested(
            request_id=uuid.uuid4(),
            user_id=user_id,
            telegram_id=telegram_id,
            chat_id=telegram_id,
            package_id="small",
        )
        for user_id, telegram_id in users
    ]


async def test_a_burst_of_topups_never_waits_for_a_second_connection(
    settings: Settings,
    sender: EventPublisher,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    """With 2 pooled connections and 10 top-ups at once: a handler that held the message's
    connection while opening the pending row on another could leave both held by handlers
    waiting for a third, for ever (a broker restart's redelivered burst did, under chaos)."""
    settings.database = DatabaseSettings(url=settings.database.url, pool_size=2)
    requests = await topup_requests(billing_engine, 10)
    service = build(settings)
    async with service.app:
        for request in requests:
            await send(sender, request)

        async def all_created() -> bool:
            found = await outbox(billing_engine, "payment.created")
            mine = {str(r.request_id) for r in requests}
            return len([e for e in found if e["request_id"] in mine]) == len(requests)

        await eventually(all_created, timeout_s=20)
    assert len(fake_yookassa.payments) >= len(requests)


async def test_repeated_topup_taps_find_their_payment_without_a_second_connection(
    settings: Settings,
    sender: EventPublisher,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    """A top-up asked twice (a re-tapped button: the same request, another event) finds its
    payment made and changes nothing. With 2 pooled connections and 10 repeats at once it must
    not take a second connection while holding the message's (a handler that did held every
    connection, each waiting)."""
    requests = await topup_requests(billing_engine, 10)
    service = build(settings)
    async with service.app:  # first the payments, with the default pool
        for request in requests:
            await send(sender, request)

        async def created() -> bool:
            found = await outbox(billing_engine, "payment.created")
            mine = {str(r.request_id) for r in requests}
            return len([e for e in found if e["request_id"] in mine]) == len(requests)

        await eventually(created, timeout_s=20)
    settings.database = DatabaseSettings(url=settings.database.url, pool_size=2)
    service = build(settings)
    async with service.app:
        repeats = [await send(sender, request) for request in requests]

        async def all_handled() -> bool:
            return await handled(billing_engine, *(r.id for r in repeats)) == len(repeats)

        await eventually(all_handled, timeout_s=20)
    assert await created()  # and no second payment for any of them
    assert len(fake_yookassa.payments) == len(requests)
