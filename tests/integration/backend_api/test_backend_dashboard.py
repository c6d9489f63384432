"""The dashboard's figures end to end, each from its owner: users from the gateway, jobs from
jobs, money and the weekly bonus from billing. The database is shared with other tests, so
each figure is checked by what this test's rows add to it."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from billing.models import LedgerEntry, Payment, PaymentStatus, PaymentType
from bot_gateway.models import GatewayJob, GatewayUser
from jobs.models import Job, Preset
from messaging.unit_of_work import UnitOfWork
from support.backend_harness import VIEWER, Running
from support.billing_harness import new_telegram_id
from support.gateway_harness import new_user

pytestmark = pytest.mark.integration


async def dashboard(running: Running, **params: Any) -> Any:
    async with (
        running.client(login=VIEWER) as client,
        client.get("/api/v1/dashboard", params=params) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


def today(figures: dict[str, Any], currency: str) -> dict[str, int]:
    day = datetime.now(UTC).date().isoformat()
    for row in figures["money"]["days"]:
        if (row["day"], row["currency"]) == (day, currency):
            return row  # type: ignore[no-any-return]
    return {"revenue": 0, "refunds": 0, "payments": 0}


def outcome(figures: dict[str, Any], status: str) -> int:
    return sum(row["jobs"] for row in figures["jobs"]["outcomes"] if row["status"] == status)


def this_week(figures: dict[str, Any]) -> dict[str, int]:
    now = datetime.now(UTC).date()
    monday = now.fromordinal(now.toordinal() - now.weekday()).isoformat()
    for row in figures["money"]["bonus_weeks"]:
        if row["week"] == monday:
            return row  # type: ignore[no-any-return]
    return {"users": 0, "credits": 0}


async def test_the_dashboard_counts_users_jobs_and_money_from_their_owners(
    running: Running, backend_engine: AsyncEngine
) -> None:
    before = await dashboard(running, days=7)
    source = f"promo_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    async with backend_engine.begin() as connection:
        for index in range(3):
            telegram_id = new_user().id
            await connection.execute(
                insert(GatewayUser).values(
                    telegram_id=telegram_id,
                    user_id=random.randrange(1, 2**31 - 1),
                    chat_id=telegram_id,
                    language="ru",
                    source=source if index else None,
                    blocked=index == 2,
                )
            )
        await connection.execute(
            insert(GatewayJob).values(
                request_id=uuid.uuid4(),
                telegram_id=telegram_id,
                user_id=1,
                chat_id=telegram_id,
                language="ru",
                title="test",
                phase="done",
            )
        )
        name = f"Dash {uuid.uuid4().hex[:6]}"
        preset_id = (
            await connection.execute(
                insert(Preset)
                .values(  # an id no other test's jobs name
                    id=random.randrange(10**8, 2**31 - 1),
                    category="test",
                    name=name,
                    prompt="p",
                    price=30,
                    order_index=0,
                )
                .returning(Preset.id)
            )
        ).scalar_one()
    async with UnitOfWork(backend_engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, new_telegram_id(), "dash", 60)
    async with backend_engine.begin() as connection:
        for stage, price in (("completed", 30), ("completed", 45), ("failed", 30)):
            await connection.execute(
                insert(Job).values(
                    user_id=account.user_id,
                    prompt="p",
                    preset_id=preset_id,
                    price=price,
                    stage=stage,
                    request_id=uuid.uuid4(),
                )
            )
        for currency, amount, kind in (
            ("RUB", 49_900, PaymentType.payment),
            ("RUB", 10_000, PaymentType.refund),
            ("XTR", 150, PaymentType.payment),
        ):
            await connection.execute(
                insert(Payment).values(
                    user_id=account.user_id,
                    amount=amount,
                    currency=currency,
                    status=PaymentStatus.succeeded,
                    payment_type=kind,
                    paid_at=now,
                )
            )
        await connection.execute(  # a pending payment is no revenue
            insert(Payment).values(
                user_id=account.user_id, amount=1_000, currency="RUB", status=PaymentStatus.pending
            )
        )
        await connection.execute(
            insert(LedgerEntry).values(
                user_id=account.user_id,
                idempotency_key=f"test-bonus:{uuid.uuid4()}",
                kind="bonus",
                amount=20,
                balance_after=80,
            )
        )

    after = await dashboard(running, days=7)

    users, was = after["users"], before["users"]
    assert users["users"] - was["users"] == 3
    assert users["blocked"] - was["blocked"] == 1
    assert len(users["new_per_day"]) == 7
    assert users["new_per_day"][-1]["day"] == now.date().isoformat()
    assert users["new_per_day"][-1]["count"] - was["new_per_day"][-1]["count"] == 3
    for window in ("active_1d", "active_7d", "active_30d"):
        assert users[window] - was[window] == 3, window  # joined now (one also asked)
    assert {"source": source, "users": 2} in users["sources"]

    (preset,) = [row for row in after["jobs"]["presets"] if row["preset_id"] == preset_id]
    assert preset == {
        "preset_id": preset_id,
        "name": name,
        "jobs": 3,
        "completed": 2,
        "failed": 1,
        "success_rate": pytest.approx(2 / 3),
        "revenue": 75,
    }
    assert outcome(after, "completed") - outcome(before, "completed") == 2
    assert outcome(after, "failed") - outcome(before, "failed") == 1

    rubles, rubles_before = today(after, "RUB"), today(before, "RUB")
    assert rubles["revenue"] - rubles_before["revenue"] == 49_900
    assert rubles["payments"] - rubles_before["payments"] == 1
    assert rubles["refunds"] - rubles_before["refunds"] == 10_000
    assert today(after, "XTR")["revenue"] - today(before, "XTR")["revenue"] == 150
    week, week_before = this_week(after), this_week(before)
    assert week["credits"] - week_before["credits"] == 20
    assert week["users"] - week_before["users"] == 1


async def test_the_dashboard_is_for_signed_in_operators(running: Running) -> None:
    async with running.client(signed_in=False) as client:
        async with client.get("/api/v1/dashboard") as response:
            assert response.status == 401
        async with client.get("/panel/dashboard", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/panel/login"
    async with (
        running.client(login=VIEWER) as client,
        client.get("/api/v1/dashboard", params={"days": 0}) as response,
    ):
        assert response.status == 422
