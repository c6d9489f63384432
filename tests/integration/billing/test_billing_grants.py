"""An admin's /grant as billing sees it: CreditsGrantRequested through the running service."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from billing import accounts
from billing.app import Billing
from contracts.envelope import new_envelope
from contracts.events import CreditsGrantRequested
from messaging.publisher import EventPublisher
from support.billing_harness import (
    balance_of,
    eventually,
    handled,
    ledger_sum,
    new_telegram_id,
    open_account,
    outbox,
    scalar,
    send,
)

Engine = AsyncEngine
ADMIN_ID = 7_000_000_001


async def _claimed(engine: Engine, *event_ids: uuid.UUID) -> None:
    async def all_claimed() -> bool:
        return await handled(engine, *event_ids) == len(event_ids)

    await eventually(all_claimed)


async def test_a_grant_delivered_twice_credits_once_through_the_ledger(
    billing: Billing, sender: EventPublisher, billing_engine: Engine
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=40)
    grant = CreditsGrantRequested(
        request_id=uuid.uuid4(),
        admin_telegram_id=ADMIN_ID,
        telegram_id=telegram_id,
        credits=25,
        reason="конкурс",
    )
    envelope = new_envelope(grant, source="test")
    await sender.publish_envelope(envelope, grant.routing_key())
    await sender.publish_envelope(envelope, grant.routing_key())  # redelivered as is
    again = await send(sender, grant)  # the same request under a new event id
    await _claimed(billing_engine, envelope.id, again.id)

    (granted,) = await outbox(billing_engine, "credits.granted", telegram_id=telegram_id)
    assert granted == {
        "request_id": str(grant.request_id),
        "admin_telegram_id": ADMIN_ID,
        "user_id": user_id,
        "telegram_id": telegram_id,
        "credits": 25,
        "balance": 65,
    }
    assert await balance_of(billing_engine, user_id) == 65
    assert await ledger_sum(billing_engine, user_id) == 65
    entry = await scalar(
        billing_engine,
        "SELECT kind || ' ' || trim_scale(amount) || ' ' || reason FROM billing_ledger "
        "WHERE idempotency_key = :key",
        key=f"grant:{grant.request_id}",
    )
    assert entry == f"adjustment 25 /grant by admin {ADMIN_ID}: конкурс"
    assert await outbox(billing_engine, "credits.grant_refused", telegram_id=telegram_id) == []
    async with billing_engine.connect() as connection:
        drifts = await accounts.drifts(connection)
    drifting = [drift for drift in drifts if drift.user_id == user_id]
    assert drifting == []  # `imagebot billing audit`'s own check (other tests leave drifts)


async def test_a_grant_to_an_unknown_account_is_refused_and_moves_nothing(
    billing: Billing, sender: EventPublisher, billing_engine: Engine
) -> None:
    stranger = new_telegram_id()
    grant = CreditsGrantRequested(
        request_id=uuid.uuid4(), admin_telegram_id=ADMIN_ID, telegram_id=stranger, credits=10
    )
    envelope = await send(sender, grant)
    await _claimed(billing_engine, envelope.id)

    (refused,) = await outbox(billing_engine, "credits.grant_refused", telegram_id=stranger)
    assert refused["reason"] == "unknown_account"
    assert refused["request_id"] == str(grant.request_id)
    assert refused["admin_telegram_id"] == ADMIN_ID
    assert await outbox(billing_engine, "credits.granted", telegram_id=stranger) == []
    entries = await scalar(
        billing_engine,
        "SELECT count(*) FROM billing_ledger WHERE idempotency_key = :key",
        key=f"grant:{grant.request_id}",
    )
    assert entries == 0
    opened = await scalar(
        billing_engine, "SELECT count(*) FROM users WHERE telegram_id = :t", t=stranger
    )
    assert opened == 0  # a grant never opens an account
