"""An operator's re-check (PaymentRecheckRequested) is always answered (PaymentRechecked), also
when YooKassa's notification settles the payment between the re-check's read and its write."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from test_billing_payments import pending_payment

from billing.app import Billing, Settings, build
from billing.domain import RemotePayment
from billing.operator_money import OperatorMoney
from billing.yookassa_gateway import YooKassaGateway
from contracts.envelope import new_envelope
from contracts.events import PaymentRecheckRequested
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import balance_of, open_account, outbox, post_webhook

Engine = AsyncEngine


@pytest.fixture
async def idle_billing(settings: Settings) -> AsyncIterator[Billing]:
    service = build(settings)
    yield service
    await service.runtime.engine.dispose()


class NotifiedFirst(YooKassaGateway):
    """YooKassa whose notification reaches billing's webhook, and settles the payment, just
    after a re-check has read the payment from the API."""

    def __init__(self, billing: Billing, fake: YooKassaSandbox, settings: Settings) -> None:
        super().__init__(settings.yookassa)
        self._billing, self._fake = billing, fake

    async def fetch(self, yookassa_id: str) -> RemotePayment:
        remote = await super().fetch(yookassa_id)
        notification = self._fake.notification(yookassa_id)
        assert (await post_webhook(self._billing, notification))[0] == 200
        return remote


async def recheck(
    billing: Billing, money: OperatorMoney, payment_id: int
) -> list[dict[str, object]]:
    """Handle one re-check command as billing's consumer does; its answers in the outbox."""
    request_id = uuid.uuid4()
    command = PaymentRecheckRequested(
        request_id=request_id, operator="alice", payment_id=payment_id, reason="lost webhook?"
    )
    cause = new_envelope(command, source="backend_api")
    async with billing.runtime.unit_of_work(cause) as uow:
        await money.recheck(command, uow)
        await uow.commit()
    return await outbox(billing.runtime.engine, "payment.rechecked", request_id=str(request_id))


@pytest.mark.parametrize(("at_yookassa", "settled_as"), [("succeeded", "succeeded"),
                                                          ("canceled", "cancelled")])  # fmt: skip
async def test_a_recheck_that_a_notification_overtakes_is_still_answered(
    idle_billing: Billing,
    billing_engine: Engine,
    fake_yookassa: YooKassaSandbox,
    settings: Settings,
    at_yookassa: str,
    settled_as: str,
) -> None:
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await pending_payment(idle_billing, billing_engine, user_id)
    fake_yookassa.set_status(yookassa_id, at_yookassa)
    notified_first = NotifiedFirst(idle_billing, fake_yookassa, settings)
    money = OperatorMoney(idle_billing.runtime, notified_first, settings.yookassa)
    [answer] = await recheck(idle_billing, money, payment_id)
    assert (answer["outcome"], answer["status_before"], answer["status"]) == (
        "done",
        "pending",
        settled_as,
    )
    assert answer["provider_status"] == at_yookassa
    assert await balance_of(billing_engine, user_id) == (160 if at_yookassa == "succeeded" else 60)
