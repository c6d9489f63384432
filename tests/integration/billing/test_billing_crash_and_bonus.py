"""Billing killed between commit and publish; the weekly bonus raced by two replicas."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from test_billing_payments import pending_payment  # type: ignore[import-not-found]

from billing.app import Settings, build
from billing.settings import BonusSettings
from contracts.topology import Topology
from messaging.broker import declare_topology
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import (
    OUTBOX,
    balance_of,
    eventually,
    ledger_sum,
    make_settings,
    open_account,
    outbox,
    scalar,
)
from support.database import DatabaseFactory, engine_at, migrate

Engine = AsyncEngine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_billing(env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("imagebot")),
        "run",
        "billing",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    if answer.status == 200:
                        return process
            except aiohttp.ClientError:
                pass
            if process.returncode is not None:
                raise AssertionError((await process.stderr.read()).decode())  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
    raise AssertionError("billing did not become healthy")


async def test_killed_after_committing_a_credit_the_event_still_goes_out_once(
    settings: Settings,
    billing_database_url: str,
    billing_engine: Engine,
    amqp_url: str,
    topology: Topology,
    fake_yookassa: YooKassaSandbox,
) -> None:
    """Billing runs as a real process. To hold it in "credit committed, event not yet published",
    the only binding of `payment.succeeded` (the gateway's queue) is removed while it runs: the
    webhook commits the credit and answers 200, the relay's publish comes back unroutable
    (mandatory) and the row stays unsent. Then SIGKILL; the restart re-declares the topology and
    its relay publishes the event, exactly once.
    """
    service = build(settings)  # only to create the pending payment through the real SDK
    user_id, _ = await open_account(billing_engine, balance=60)
    payment_id, yookassa_id = await pending_payment(service, billing_engine, user_id)
    await service.runtime.engine.dispose()
    fake_yookassa.set_status(yookassa_id, "succeeded")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": billing_database_url,
        "AMQP_URL": amqp_url,
        "AMQP_NAMESPACE": topology.namespace,
        "SERVICE_HTTP_HOST": "127.0.0.1",
        "SERVICE_HTTP_PORT": str(port),
        "SERVICE_LOG_LEVEL": "WARNING",
        "YOOKASSA_API_URL": fake_yookassa.api_url,
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        "BONUS_ENABLED": "false",
        "BILLING_RECONCILE_INTERVAL_S": "3600",
        "OUTBOX_POLL_INTERVAL_S": "0.1",
    }
    gateway_queue = topology.service_queues["bot_gateway"].name
    billing = await _start_billing(env, port)
    try:
        await _unbind(amqp_url, gateway_queue, topology.events_exchange, "payment.succeeded")
        async with aiohttp.ClientSession() as http:
            body = fake_yookassa.notification(yookassa_id)
            url = f"http://127.0.0.1:{port}/webhooks/yookassa"
            async with http.post(url, json=body) as answer:
                assert answer.status == 200

        async def tried_and_failed() -> bool:
            return bool(
                await scalar(
                    billing_engine,
                    select(func.count())
                    .select_from(OUTBOX)
                    .where(
                        OUTBOX.c.routing_key == "payment.succeeded",
                        OUTBOX.c.published_at.is_(None),
                        OUTBOX.c.attempts >= 1,
                        OUTBOX.c.envelope["data"].contains({"payment_id": payment_id}),
                    ),
                )
            )

        await eventually(tried_and_failed)
    finally:
        billing.send_signal(signal.SIGKILL)
        await billing.wait()
    assert billing.returncode == -signal.SIGKILL
    assert await balance_of(billing_engine, user_id) == 160

    billing = await _start_billing(env, port)  # declares the topology again: the route is back
    try:
        messages = await _drain_until(amqp_url, gateway_queue, "payment.succeeded", 2)
        async with aiohttp.ClientSession() as http:  # YooKassa retrying meanwhile changes nothing
            url = f"http://127.0.0.1:{port}/webhooks/yookassa"
            async with http.post(url, json=fake_yookassa.notification(yookassa_id)) as answer:
                assert answer.status == 200
        messages += await _drain_until(amqp_url, gateway_queue, "payment.succeeded", 0)
    finally:
        billing.send_signal(signal.SIGTERM)
        await asyncio.wait_for(billing.wait(), timeout=30)
    mine = [m for m in messages if f'"payment_id":{payment_id},' in m.body.decode()]
    # once in each version: v2 (the balance exact) and its v1 copy
    assert sorted(m.headers["x-event-version"] for m in mine) == [1, 2]
    assert await balance_of(billing_engine, user_id) == 160
    assert await ledger_sum(billing_engine, user_id) == 160
    assert len(await outbox(billing_engine, "payment.succeeded", payment_id=payment_id)) == 1


async def _unbind(amqp_url: str, queue: str, exchange: str, routing_key: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        target = await channel.get_queue(queue, ensure=False)
        await target.unbind(exchange, routing_key)


async def _drain_until(
    amqp_url: str, queue: str, message_type: str, expected: int, idle_s: float = 1.0
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Messages of `message_type` from `queue`: at least `expected`, then quiet for `idle_s`."""
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect_robust(amqp_url)
    loop = asyncio.get_running_loop()
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        deadline, quiet_since = loop.time() + 30, loop.time()
        while loop.time() < deadline:
            message = await source.get(no_ack=True, fail=False)
            if message is None:
                if len(taken) >= expected and loop.time() - quiet_since > idle_s:
                    break
                await asyncio.sleep(0.05)
                continue
            quiet_since = loop.time()
            if message.type == message_type:
                taken.append(message)
    assert len(taken) >= expected
    return taken


@pytest.fixture
async def bonus_database_url(databases: DatabaseFactory) -> str:
    url = await databases.create("bonus")
    await migrate(url)
    return url


@pytest.fixture
async def bonus_engine(bonus_database_url: str) -> AsyncIterator[Engine]:
    async with engine_at(bonus_database_url) as engine:
        yield engine


async def test_two_replicas_granting_the_weekly_bonus_at_once_grant_it_once_per_user(
    bonus_database_url: str,
    bonus_engine: Engine,
    amqp_url: str,
    topology: Topology,
    fake_yookassa: YooKassaSandbox,
) -> None:
    balances = (0, 10, 59, 60, 500) * 40
    users = [await open_account(bonus_engine, balance=b) for b in balances]
    bonus = BonusSettings(credits=25, eligibility="below_balance", balance_threshold=60)
    replicas = [
        build(make_settings(bonus_database_url, amqp_url, topology, fake_yookassa, bonus=bonus))
        for _ in range(2)
    ]
    monday = datetime(2026, 11, 22, 21, 0, 1, tzinfo=UTC)  # Monday 00:00:01 in Moscow
    for replica in replicas:
        replica.bonus._clock = lambda: monday
    await declare_topology(amqp_url, topology)
    try:
        granted = await asyncio.gather(*(r.bonus.run_once() for r in replicas))
        again = await asyncio.gather(*(r.bonus.run_once() for r in replicas))
    finally:
        for replica in replicas:
            await replica.runtime.engine.dispose()

    eligible = [
        user_id for (user_id, _), b in zip(users, (0, 10, 59, 60, 500) * 40, strict=True) if b < 60
    ]
    assert sum(granted) == len(eligible) == 120
    assert again == [0, 0]
    bonuses = await scalar(
        bonus_engine,
        "SELECT count(DISTINCT user_id) || '/' || count(*) FROM billing_ledger "
        "WHERE idempotency_key LIKE :pattern",
        pattern="bonus:%:2026-W48",
    )
    assert bonuses == "120/120"
    rows = "SELECT count(*) FROM payments WHERE payment_type = 'weekly_bonus' AND amount = 2500"
    assert await scalar(bonus_engine, rows) == 120
    events = await outbox(bonus_engine, "bonus.weekly_granted", week="2026-W48")
    assert sorted(e["user_id"] for e in events) == sorted(eligible)
    for user_id in eligible[:3]:
        assert await ledger_sum(bonus_engine, user_id) == await balance_of(bonus_engine, user_id)
