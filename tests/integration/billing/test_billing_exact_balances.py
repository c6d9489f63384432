"""A customer's database whose `users.balance` (a double precision) holds fractions, adopted
with `imagebot migrate` and run by billing: `imagebot billing audit` is clean, and a debit, a
refused debit, a refund and a top-up on such an account are exact to the credit, each event
in v2 (the balance exact) and, beside it, v1 (whole credits)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.app import Billing, build
from contracts.events import JobFailed, TopUpRequested
from contracts.topology import Topology
from messaging.publisher import EventPublisher
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import (
    balance_of,
    eventually,
    ledger_sum,
    make_settings,
    new_job,
    outbox,
    post_webhook,
    scalar,
    send,
)
from support.database import DatabaseFactory, engine_at, migrate

Engine = AsyncEngine


async def imagebot(database_url: str, *args: str) -> tuple[int, str, str]:
    """Run the `imagebot` command against `database_url`: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("imagebot")),
        *args,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def customer(databases: DatabaseFactory) -> tuple[str, dict[str, int]]:
    """The customer's database as their bot left it (the seed's shape under their own
    revision id): telegram ids of accounts holding 12.5, 0.1 + 0.2 (a double's 0.3) and 40."""
    url = await databases.create("customer_fractions")
    await migrate(url, "0001")
    first = random.randrange(10**8, 2**31 - 10)  # the customer's telegram_id is still 32-bit
    accounts = {"half": first, "noise": first + 1, "whole": first + 2}
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6'")
        for name, literal in (("half", "12.5"), ("noise", "0.1::float8 + 0.2"), ("whole", "40")):
            await connection.execute(
                f"INSERT INTO users (telegram_id, username, balance) VALUES ($1, $2, {literal})",
                accounts[name],
                name,
            )
        assert await connection.fetchval(
            "SELECT balance FROM users WHERE username = 'noise'"
        ) == pytest.approx(0.3)
    finally:
        await connection.close()
    return url, accounts


@pytest.fixture
async def adopted(customer: tuple[str, dict[str, int]]) -> AsyncIterator[Engine]:
    url, _ = customer
    code, out, err = await imagebot(url, "migrate")
    assert code == 0, err
    assert "adopted an existing database at revision 0001" in out
    async with engine_at(url) as engine:
        yield engine


@pytest.fixture
async def service(
    customer: tuple[str, dict[str, int]],
    adopted: Engine,
    amqp_url: str,
    topology: Topology,
    fake_yookassa: YooKassaSandbox,
) -> AsyncIterator[Billing]:
    billing = build(make_settings(customer[0], amqp_url, topology, fake_yookassa))
    async with billing.app:
        yield billing


async def _user(engine: Engine, telegram_id: int) -> int:
    found = await scalar(engine, "SELECT user_id FROM users WHERE telegram_id = :t", t=telegram_id)
    return int(found)


async def _both_versions(
    engine: Engine, routing_key: str, **data: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event's v2 and v1 copies, once both are in billing's outbox."""

    async def there() -> bool:
        return all([await outbox(engine, routing_key, version=v, **data) for v in (1, 2)])

    await eventually(there)
    [latest] = await outbox(engine, routing_key, version=2, **data)
    [older] = await outbox(engine, routing_key, version=1, **data)
    return latest, older


async def test_adoption_carries_fractional_balances_and_the_audit_finds_nothing(
    customer: tuple[str, dict[str, int]], adopted: Engine
) -> None:
    url, accounts = customer
    balances = {
        name: await balance_of(adopted, await _user(adopted, telegram_id))
        for name, telegram_id in accounts.items()
    }
    assert balances == {"half": Decimal("12.5"), "noise": Decimal("0.3"), "whole": 40}
    for telegram_id in accounts.values():
        user_id = await _user(adopted, telegram_id)
        assert await ledger_sum(adopted, user_id) == await balance_of(adopted, user_id)
    code, out, err = await imagebot(url, "billing", "audit")
    assert (code, out.strip(), err) == (0, "audited 3 accounts: 0 drifting", "")
    # an audit that finds a drift says it in the credits it is, to the millionth
    user_id = await _user(adopted, accounts["half"])
    async with adopted.begin() as connection:
        await connection.exec_driver_sql(
            f"UPDATE users SET balance = balance + 0.000001 WHERE user_id = {user_id}"
        )
    code, _, err = await imagebot(url, "billing", "audit")
    assert code == 1
    assert f"DRIFT user {user_id} (telegram {accounts['half']}): balance 12.500001 != " in err
    assert err.strip().endswith("ledger 12.5")


async def test_a_fractional_balance_is_debited_refused_refunded_and_topped_up_exactly(
    customer: tuple[str, dict[str, int]],
    adopted: Engine,
    service: Billing,
    sender: EventPublisher,
    fake_yookassa: YooKassaSandbox,
) -> None:
    url, accounts = customer
    telegram_id = accounts["half"]
    user_id = await _user(adopted, telegram_id)

    paid = new_job(user_id, telegram_id, price=10)  # 12.5 pays 10: 2.5 left
    await send(sender, paid)
    latest, older = await _both_versions(adopted, "balance.debited", job_id=paid.job_id)
    assert (latest["amount"], latest["balance"]) == (10, Decimal("2.5"))
    assert (older["amount"], older["balance"]) == (10, 2)  # v1: whole credits, rounded down
    assert await balance_of(adopted, user_id) == Decimal("2.5")

    short = new_job(user_id, telegram_id, price=3)  # 2.5 cannot pay 3
    await send(sender, short)
    latest, older = await _both_versions(adopted, "balance.debit_rejected", job_id=short.job_id)
    assert (latest["balance"], latest["shortfall"]) == (Decimal("2.5"), Decimal("0.5"))
    assert (older["balance"], older["shortfall"]) == (2, 1)  # what v1 knows: 2 short of 3
    assert await balance_of(adopted, user_id) == Decimal("2.5")

    failed = JobFailed(job_id=paid.job_id, user_id=user_id, chat_id=telegram_id, reason="gpu")
    await send(sender, failed)
    latest, older = await _both_versions(adopted, "balance.refunded", job_id=paid.job_id)
    assert (latest["amount"], latest["balance"]) == (10, Decimal("12.5"))
    assert older["balance"] == 12

    request = TopUpRequested(
        request_id=uuid.uuid4(),
        user_id=user_id,
        telegram_id=telegram_id,
        chat_id=telegram_id,
        package_id="medium",  # 500.00 RUB for 550 credits
    )
    await send(sender, request)

    async def created() -> bool:
        return bool(await outbox(adopted, "payment.created", request_id=str(request.request_id)))

    await eventually(created)
    [payment] = await outbox(adopted, "payment.created", request_id=str(request.request_id))
    [remote_id] = fake_yookassa.payments
    fake_yookassa.set_status(remote_id, "succeeded", captured_at="2026-12-05T06:00:00.000Z")
    status, _ = await post_webhook(service, fake_yookassa.notification(remote_id))
    assert status == 200
    latest, older = await _both_versions(
        adopted, "payment.succeeded", payment_id=payment["payment_id"]
    )
    assert (latest["credits"], latest["balance"]) == (550, Decimal("562.5"))
    assert older["balance"] == 562
    assert await balance_of(adopted, user_id) == Decimal("562.5")
    assert await ledger_sum(adopted, user_id) == Decimal("562.5")
    code, out, err = await imagebot(url, "billing", "audit")
    assert (code, out.strip()) == (0, "audited 3 accounts: 0 drifting"), err


async def test_the_exact_balance_travels_as_a_decimal_string_and_v1_as_an_integer(
    customer: tuple[str, dict[str, int]],
    adopted: Engine,
    service: Billing,
    sender: EventPublisher,
) -> None:
    """What a subscriber reads off the wire: v2's balance is "0.3" (never 0.30000000000000004),
    v1's is 0."""
    telegram_id = customer[1]["noise"]
    user_id = await _user(adopted, telegram_id)
    job = new_job(user_id, telegram_id, price=1)
    await send(sender, job)
    await _both_versions(adopted, "balance.debit_rejected", job_id=job.job_id)
    async with adopted.connect() as connection:
        rows = await connection.exec_driver_sql(
            "SELECT envelope->>'version', envelope->'data'->'balance', "
            "envelope->'data'->'shortfall' FROM billing_outbox "
            f"WHERE routing_key = 'balance.debit_rejected' AND envelope->'data'->>'job_id' = "
            f"'{job.job_id}' ORDER BY seq"
        )
        assert [tuple(row) for row in rows] == [("2", "0.3", "0.7"), ("1", 0, 1)]
