"""No money lost at the edges: late payments, cancels at YooKassa, a hung API, proxies, logs.

The real `yookassa` SDK against the sandbox YooKassa, billing on the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from test_billing_payments import YOOKASSA_ADDRESS, pending_payment

from billing.app import Billing, Settings, build
from billing.domain import RemotePayment
from billing.settings import BillingSettings, WebhookSettings, YooKassaSettings
from billing.yookassa_gateway import ProviderUnavailableError
from contracts.events import TopUpRequested
from messaging.publisher import EventPublisher
from messaging.runtime import server_config
from messaging.settings import ServiceSettings
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import (
    balance_of,
    eventually,
    execute,
    ledger_sum,
    open_account,
    outbox,
    post_webhook,
    scalar,
    send,
)

Engine = AsyncEngine


@pytest.fixture
async def expiring(settings: Settings) -> AsyncIterator[Billing]:
    """Billing whose reconciler checks every pending payment and expires them after an hour."""
    settings.billing = BillingSettings(reconcile_min_age_s=0, pending_expiry_s=3600)
    service = build(settings)
    yield service
    await service.runtime.engine.dispose()


async def _age(engine: Engine, payment_id: int) -> None:
    await execute(
        engine,
        "UPDATE payments SET created_at = now() - interval '2 hours' WHERE id = :p",
        p=payment_id,
    )


async def _logs(engine: Engine, **where: object) -> str | None:
    clause = " AND ".join(f"{column} = :{column}" for column in where)
    return await scalar(  # type: ignore[no-any-return]
        engine,
        f"SELECT string_agg(status || ' ' || amount, ',' ORDER BY id) FROM payment_logs "
        f"WHERE {clause}",
        **where,
    )


async def test_a_payment_we_expired_and_the_buyer_paid_later_is_credited(
    expiring: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await pending_payment(expiring, billing_engine, user_id)
    await _age(billing_engine, payment_id)
    await expiring.reconciler.run_once()
    status = "SELECT status::text FROM payments WHERE id = :p"
    assert await scalar(billing_engine, status, p=payment_id) == "cancelled"
    [expired] = await outbox(billing_engine, "payment.failed", payment_id=payment_id)
    assert expired["reason"] == "expired"
    assert await _logs(billing_engine, payment_id=yookassa_id) == "expired 100"

    # The buyer pays the link they still hold; YooKassa's notification comes.
    fake_yookassa.set_status(yookassa_id, "succeeded")
    notification = fake_yookassa.notification(yookassa_id)
    answers = await asyncio.gather(*(post_webhook(expiring, notification) for _ in range(5)))
    assert sorted(detail for _, detail in answers) == ["credit"] + ["done"] * 4
    assert await scalar(billing_engine, status, p=payment_id) == "succeeded"
    assert await balance_of(billing_engine, user_id) == 160
    assert await ledger_sum(billing_engine, user_id) == 160
    [paid] = await outbox(billing_engine, "payment.succeeded", payment_id=payment_id)
    assert (paid["credits"], paid["balance"]) == (100, 160)
    assert await _logs(billing_engine, payment_id=yookassa_id) == "expired 100,succeeded 100"


class ExpiredWhileFetching:
    """The webhook's YooKassa, in whose fetch the reconciler expires the same payment: it had
    found it still pending at YooKassa a moment before the buyer paid."""

    def __init__(self, billing: Billing, fake: YooKassaSandbox) -> None:
        self._billing, self._fake = billing, fake
        self._provider = billing.topups._provider

    async def fetch(self, yookassa_id: str) -> RemotePayment:
        self._fake.set_status(yookassa_id, "pending")
        await self._billing.reconciler.run_once()
        self._fake.set_status(yookassa_id, "succeeded")
        return await self._provider.fetch(yookassa_id)


async def test_a_payment_expired_while_its_success_was_being_verified_is_credited(
    expiring: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await pending_payment(expiring, billing_engine, user_id)
    await _age(billing_engine, payment_id)
    fake_yookassa.set_status(yookassa_id, "succeeded")
    expiring.webhook._provider = ExpiredWhileFetching(expiring, fake_yookassa)  # type: ignore[assignment]

    status, _ = await post_webhook(expiring, fake_yookassa.notification(yookassa_id))

    assert status == 200
    sql = "SELECT status::text FROM payments WHERE id = :p"
    assert await scalar(billing_engine, sql, p=payment_id) == "succeeded"
    assert await balance_of(billing_engine, user_id) == 160
    assert await ledger_sum(billing_engine, user_id) == 160
    [paid] = await outbox(billing_engine, "payment.succeeded", payment_id=payment_id)
    assert (paid["credits"], paid["balance"]) == (100, 160)


async def test_a_payment_waiting_for_capture_is_canceled_at_yookassa_before_it_expires(
    expiring: Billing, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await pending_payment(expiring, billing_engine, user_id)
    fake_yookassa.set_status(yookassa_id, "waiting_for_capture")
    await _age(billing_engine, payment_id)
    await expiring.reconciler.run_once()
    await expiring.reconciler.run_once()
    assert fake_yookassa.payments[yookassa_id]["status"] == "canceled"
    reason = fake_yookassa.payments[yookassa_id]["cancellation_details"]["reason"]
    assert reason == "canceled_by_merchant"
    status = "SELECT status::text FROM payments WHERE id = :p"
    assert await scalar(billing_engine, status, p=payment_id) == "cancelled"
    [expired] = await outbox(billing_engine, "payment.failed", payment_id=payment_id)
    assert expired["reason"] == "expired"
    assert await _logs(billing_engine, payment_id=yookassa_id) == "canceled 100"
    assert await balance_of(billing_engine, user_id) == 60


async def test_a_hung_yookassa_times_out_at_the_socket_and_frees_its_thread(
    settings: Settings, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    """One thread for the SDK: were the hung call's thread still waiting on its socket, the
    next call would wait behind it and time out too."""
    settings.yookassa = YooKassaSettings(api_url=fake_yookassa.api_url, timeout_s=0.5, pool_size=1)
    service = build(settings)
    try:
        user_id, _ = await open_account(billing_engine, balance=60)
        _, yookassa_id = await pending_payment(service, billing_engine, user_id)
        fake_yookassa.set_status(yookassa_id, "succeeded")
        notification = fake_yookassa.notification(yookassa_id)
        fake_yookassa.hang_next(1, seconds=600)
        assert await post_webhook(service, notification) == (503, "temporarily unavailable")
        assert await post_webhook(service, notification) == (200, "credit")
        fake_yookassa.hang_next(1, seconds=600)
        with pytest.raises(ProviderUnavailableError):
            await service.topups._provider.fetch(yookassa_id)
        assert (await service.topups._provider.fetch(yookassa_id)).status == "succeeded"
    finally:
        await service.runtime.engine.dispose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _served(service: Billing, body: dict[str, object], forwarded: str) -> int:
    """POST the notification to the webhook served as every service is (`server_config`),
    from 127.0.0.1 with this X-Forwarded-For."""
    port = _free_port()
    config = server_config(service.webhook, ServiceSettings(http_host="127.0.0.1", http_port=port))
    config.lifespan = "off"
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
            await asyncio.sleep(0.01)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/webhooks/yookassa",
                json=body,
                headers={"X-Forwarded-For": forwarded},
            ) as answer,
        ):
            return answer.status
    finally:
        server.should_exit = True
        await serving


async def test_only_our_trusted_proxies_speak_for_another_address(
    settings: Settings, billing_engine: Engine, fake_yookassa: YooKassaSandbox
) -> None:
    """uvicorn's own proxy handling (on by default, trusting loopback) would take the sender
    from X-Forwarded-For before billing's check: served as the services are, it is off."""
    settings.webhook = WebhookSettings()  # YooKassa's ranges; no proxy trusted
    service = build(settings)
    try:
        user_id, _ = await open_account(billing_engine, balance=0, welcome=0)
        _, yookassa_id = await pending_payment(service, billing_engine, user_id)
        fake_yookassa.set_status(yookassa_id, "succeeded")
        body = fake_yookassa.notification(yookassa_id)
        assert await _served(service, body, YOOKASSA_ADDRESS) == 403
        assert await balance_of(billing_engine, user_id) == 0
    finally:
        await service.runtime.engine.dispose()
    settings.webhook = WebhookSettings(trusted_proxies="127.0.0.1/32")
    service = build(settings)
    try:
        assert await _served(service, body, "not-an-address") == 400
        assert await _served(service, body, f"{YOOKASSA_ADDRESS}, 10.0.0.1,") == 403
        assert await _served(service, body, YOOKASSA_ADDRESS) == 200
        assert await balance_of(billing_engine, user_id) == 100
    finally:
        await service.runtime.engine.dispose()


async def test_every_settled_outcome_has_its_payment_log(
    settings: Settings,
    sender: EventPublisher,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    """Refused by YooKassa, and never created (YooKassa down through every retry)."""
    settings.billing = BillingSettings(reconcile_min_age_s=0)
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    refused = uuid.uuid4()
    fake_yookassa.fail_next(1, status=400)
    service = build(settings)
    async with service.app:
        await send(sender, TopUpRequested(request_id=refused, user_id=user_id,
                                          telegram_id=telegram_id, chat_id=telegram_id,
                                          package_id="small"))  # fmt: skip

        async def failed() -> bool:
            return bool(await outbox(billing_engine, "payment.failed", request_id=str(refused)))

        await eventually(failed)
    row = "SELECT status::text || ' ' || id FROM payments WHERE request_id = :r"
    status, refused_id = (await scalar(billing_engine, row, r=refused)).split()
    assert status == "failed"
    logs = "SELECT string_agg(status || ' ' || amount, ',') FROM payment_logs WHERE user_id = :u"
    assert await scalar(billing_engine, logs, u=user_id) == "failed 100"

    never_created, _ = await pending_payment(service, billing_engine, user_id)
    await execute(
        billing_engine,
        "UPDATE payments SET yukassa_payment_id = NULL WHERE id = :p",
        p=never_created,
    )
    for _ in range(20):  # other tests' pending rows share the line
        await service.reconciler.run_once()
        if await scalar(billing_engine, "SELECT status::text FROM payments WHERE id = :p",
                        p=never_created) != "pending":  # fmt: skip
            break
    assert await scalar(billing_engine, logs, u=user_id) == "failed 100,failed 100"
    assert int(refused_id) != never_created


async def test_the_buyer_sees_a_description_in_their_language_and_returns_to_the_bot(
    settings: Settings,
    sender: EventPublisher,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
) -> None:
    settings.yookassa = YooKassaSettings(api_url=fake_yookassa.api_url, bot_username="imgbot")
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    requests = {
        language: TopUpRequested(request_id=uuid.uuid4(), user_id=user_id,
                                 telegram_id=telegram_id, chat_id=telegram_id,
                                 package_id="small", language=language)
        for language in ("en", "ru")
    }  # fmt: skip
    service = build(settings)
    async with service.app:
        for request in requests.values():
            await send(sender, request)

        async def created() -> bool:
            return len(fake_yookassa.payments) == 2

        await eventually(created)
    by_request = {p["metadata"]["request_id"]: p for p in fake_yookassa.payments.values()}
    english = by_request[str(requests["en"].request_id)]
    russian = by_request[str(requests["ru"].request_id)]
    assert english["description"] == "Balance top-up: 100 credits"
    assert russian["description"] == "Пополнение баланса: 100 кредитов"
    assert english["confirmation"]["return_url"] == "https://t.me/imgbot"
