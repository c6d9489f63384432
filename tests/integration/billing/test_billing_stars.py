"""Telegram Stars payments on billing's side: a paid invoice credits what the invoice offered."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.app import Billing
from contracts.events import StarsPaymentReceived
from messaging.publisher import EventPublisher
from support.billing_harness import balance_of, eventually, open_account, outbox, scalar


async def test_a_paid_invoice_credits_its_own_credits_when_the_package_changed_since(
    billing: Billing, billing_engine: AsyncEngine, sender: EventPublisher
) -> None:
    """The invoice offered 80 credits for 50 Stars; the package has been changed to 100
    credits at the same price since. Telegram took the Stars for 80: 80 are credited."""
    user_id, telegram_id = await open_account(billing_engine, balance=0, welcome=0)
    charge = f"stxTEST{uuid.uuid4().hex}"
    await sender.publish(
        StarsPaymentReceived(
            telegram_payment_charge_id=charge,
            user_id=user_id,
            telegram_id=telegram_id,
            chat_id=telegram_id,
            package_id="stars_small",  # 50 Stars for 100 credits in billing's settings now
            amount=50,
            credits=80,
        )
    )

    async def settled() -> bool:
        status = await scalar(
            billing_engine,
            "SELECT max(status::text) FROM payments WHERE user_id = :u",
            u=user_id,
        )
        return str(status).lower() == "succeeded"

    await eventually(settled)
    assert await balance_of(billing_engine, user_id) == 80
    credits = await scalar(
        billing_engine, "SELECT credits FROM payments WHERE user_id = :u", u=user_id
    )
    assert credits == 80
    [succeeded] = await outbox(billing_engine, "payment.succeeded", user_id=user_id)
    assert succeeded["credits"] == 80
