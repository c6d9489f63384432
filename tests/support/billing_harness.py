"""Helpers for billing's integration tests and benchmark: accounts, events, the outbox."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from billing import accounts, services
from billing.app import Billing, Settings
from billing.domain import LedgerKind
from billing.models import DELIVERY
from billing.settings import BillingSettings, BonusSettings, WebhookSettings, YooKassaSettings
from contracts.envelope import Event, RawEnvelope, new_envelope
from contracts.events import CATALOG, JobCreated
from contracts.topology import Topology
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings, ServiceSettings
from messaging.unit_of_work import UnitOfWork
from sandbox.yookassa import YooKassaSandbox

INBOX, OUTBOX = DELIVERY.inbox, DELIVERY.outbox
_telegram_ids = itertools.count(random.randrange(10**6, 2 * 10**6) * 10**6 + 2**33)
_job_ids = itertools.count(random.randrange(1, 2**30))


def new_telegram_id() -> int:
    """Telegram ids above 32 bits, unique within the run."""
    return next(_telegram_ids)


def new_job(user_id: int, telegram_id: int, price: int, job_id: int | None = None) -> JobCreated:
    return JobCreated(
        job_id=job_id or next(_job_ids),
        request_id=uuid.uuid4(),
        user_id=user_id,
        telegram_id=telegram_id,
        chat_id=telegram_id,
        price=price,
        workflow_type="qwen_edit_2511",
    )


def make_settings(
    database_url: str, amqp_url: str, topology: Topology, fake: YooKassaSandbox, **overrides: Any
) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url, pool_size=20),  # type: ignore[arg-type]
        broker=BrokerSettings(
            url=amqp_url,  # type: ignore[arg-type]
            namespace=topology.namespace,
            prefetch=50,
            retry_backoff_s=0.05,
            transient_retry_s=2.0,
        ),
        outbox=OutboxSettings(poll_interval_s=0.1),
        service=ServiceSettings(graceful_timeout_s=5),
        billing=overrides.pop("billing", BillingSettings(reconcile_interval_s=3600)),
        yookassa=overrides.pop("yookassa", YooKassaSettings(api_url=fake.api_url, timeout_s=5)),
        bonus=overrides.pop("bonus", BonusSettings(enabled=False, interval_s=3600)),
        webhook=overrides.pop("webhook", WebhookSettings(allowed_networks="127.0.0.1/32")),
    )


async def send(sender: EventPublisher, event: Event) -> RawEnvelope:
    envelope = new_envelope(event, source="test")
    await sender.publish_envelope(envelope, event.routing_key())
    return envelope


async def open_account(engine: AsyncEngine, *, balance: int, welcome: int = 60) -> tuple[int, int]:
    """(user_id, telegram_id) of a new account holding exactly `balance`, via the ledger."""
    telegram_id = new_telegram_id()
    async with UnitOfWork(engine, DELIVERY, source="test") as uow:
        account = await services.ensure_account(uow, telegram_id, "tester", welcome)
    if balance != account.balance:
        await fund(engine, account.user_id, balance - account.balance, expect=balance)
    return account.user_id, telegram_id


async def fund(
    engine: AsyncEngine, user_id: int, credits: Decimal | int, *, expect: int | None = None
) -> None:
    """An adjustment of `credits` through the ledger, as `imagebot billing adjust` makes."""
    async with UnitOfWork(engine, DELIVERY, source="test") as uow:
        moved = await uow.apply(
            *accounts.move(
                credits,
                f"adjustment:test:{uuid.uuid4()}",
                LedgerKind.adjustment,
                user_id=user_id,
                reason="test funding",
            )
        )
    assert moved is not None
    assert expect is None or moved.balance_after == expect


async def outbox(
    engine: AsyncEngine, routing_key: str, *, version: int | None = None, **data: Any
) -> list[dict[str, Any]]:
    """Payloads billing committed to its outbox under `routing_key` whose data match `data`,
    in `version` (the newest the catalog has, unless given); exact amounts (decimal strings:
    `balance`, `shortfall`) read as Decimals, so they compare equal to the numbers they are."""
    if version is None:
        version = max(v for (kind, v) in CATALOG if kind == routing_key)
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(OUTBOX.c.envelope)
            .where(
                OUTBOX.c.routing_key == routing_key,
                OUTBOX.c.envelope["version"].as_integer() == version,
                OUTBOX.c.envelope["data"].contains(data),
            )
            .order_by(OUTBOX.c.seq)
        )
        return [_exact(row[0]["data"]) for row in rows]


def _exact(data: dict[str, Any]) -> dict[str, Any]:
    return {
        name: Decimal(value) if name in EXACT and isinstance(value, str) else value
        for name, value in data.items()
    }


EXACT = frozenset({"balance", "shortfall"})


async def handled(engine: AsyncEngine, *event_ids: uuid.UUID) -> int:
    """How many messages billing marked handled: all of them, or those of `event_ids`."""
    statement = select(func.count()).select_from(INBOX)
    if event_ids:
        statement = statement.where(INBOX.c.event_id.in_(event_ids))
    async with engine.connect() as connection:
        return int((await connection.execute(statement)).scalar_one())


async def scalar(engine: AsyncEngine, sql: str | Executable, **params: Any) -> Any:
    statement = text(sql) if isinstance(sql, str) else sql
    async with engine.connect() as connection:
        return (await connection.execute(statement, params)).scalar_one()


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(sql), params)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def balance_of(engine: AsyncEngine, user_id: int) -> Decimal:
    balance = await scalar(engine, "SELECT balance FROM users WHERE user_id = :u", u=user_id)
    assert isinstance(balance, Decimal)
    return balance


async def ledger_sum(engine: AsyncEngine, user_id: int) -> Decimal:
    total = await scalar(
        engine, "SELECT COALESCE(sum(amount), 0) FROM billing_ledger WHERE user_id = :u", u=user_id
    )
    assert isinstance(total, Decimal)
    return total


async def post_webhook(
    billing: Billing,
    body: bytes | dict[str, Any],
    *,
    client: str = "127.0.0.1",
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """POST to the webhook ASGI app as a peer at `client`: (status, detail)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/yookassa",
        "client": (client, 40000),
        "headers": [(b"content-type", content_type.encode())]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    chunks = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def respond(message: dict[str, Any]) -> None:
        sent.append(message)

    await billing.webhook(scope, receive, respond)  # type: ignore[arg-type]
    return sent[0]["status"], json.loads(sent[1]["body"])["detail"]
