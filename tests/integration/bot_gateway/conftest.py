"""The gateway on the real PostgreSQL and RabbitMQ with real aiogram against a fake Bot API.

Billing (with the real yookassa SDK on a fake API) and jobs run in process beside it on one
database of this suite's own and one broker namespace for the session; each test is a new
Telegram user (ids above 32 bits), so tests do not see each other's state. The test plays the
GPU runner through events.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from billing.app import build as build_billing
from bot_gateway.app import build as build_gateway
from contracts.topology import Topology, build_topology
from jobs.app import Settings as JobsApp
from jobs.app import create_app as create_jobs
from jobs.settings import JobsSettings
from messaging.broker import create_broker, declare_topology, delete_topology
from messaging.database import create_session_factory
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings, ServiceSettings
from sandbox.telegram import TelegramSandbox
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import make_settings as billing_settings
from support.database import RUN_ID, DatabaseFactory, engine_at, migrated_database
from support.gateway_harness import MAX_UNFINISHED, Stack, gateway_settings
from support.jobs_harness import EventLog

PRESETS = [
    # category, name, icon, price, order_index, workflow_type
    ("Фото", "Аниме", "🎌", 30, 2, "qwen_edit_2511"),
    ("Фото", "Мультфильм", "🎨", 20, 1, "qwen_edit_2511"),
    ("Фото", "Эскиз", "✏️", 1, 3, "qwen_edit_2511"),
    ("Фото", "Премиум", "💎", 1000, 4, "qwen_edit_2511"),
    ("Генерация", "Пейзаж", "🏞", 10, 1, "qwen_image"),
]


@pytest.fixture(scope="session")
async def gateway_database_url(databases: DatabaseFactory) -> str:
    url = await migrated_database(databases, "gateway")
    async with engine_at(url) as engine, engine.begin() as connection:
        for category, name, icon, price, order, workflow in PRESETS:
            await connection.execute(
                text(
                    "INSERT INTO presets (category, name, prompt, icon, price, order_index, "
                    "workflow_type) VALUES (:c, :n, :p, :i, :price, :o, :w)"
                ),
                {"c": category, "n": name, "p": f"make it {name}", "i": icon, "price": price,
                 "o": order, "w": workflow},
            )  # fmt: skip
    return url


@pytest.fixture(scope="session")
async def gateway_engine(gateway_database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_at(gateway_database_url) as engine:
        yield engine


@pytest.fixture(scope="session")
def gateway_sessions(gateway_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(gateway_engine)


@pytest.fixture(scope="session")
async def stack_topology(amqp_url: str) -> AsyncIterator[Topology]:
    topology = build_topology(f"test-{RUN_ID}-gw-{uuid.uuid4().hex[:6]}")
    await declare_topology(amqp_url, topology)
    yield topology
    await delete_topology(amqp_url, topology)


@pytest.fixture(scope="session")
async def telegram() -> AsyncIterator[TelegramSandbox]:
    fake = TelegramSandbox()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="session")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("objects")


@pytest.fixture(scope="session")
async def stack(
    gateway_database_url: str,
    amqp_url: str,
    stack_topology: Topology,
    telegram: TelegramSandbox,
    store_root: Path,
) -> AsyncIterator[Stack]:
    """Billing, jobs and the gateway, started once for the whole suite."""
    yookassa = YooKassaSandbox()
    await yookassa.start()
    billing = build_billing(
        billing_settings(gateway_database_url, amqp_url, stack_topology, yookassa)
    )
    jobs = create_jobs(
        JobsApp(
            jobs=JobsSettings(
                dispatch_interval_s=0.1,
                sweep_interval_s=0.1,
                retry_backoff_s=0.05,
                retry_backoff_max_s=0.2,
                max_unfinished_jobs_per_user=MAX_UNFINISHED,
            ),
            database=DatabaseSettings(url=gateway_database_url),  # type: ignore[arg-type]
            broker=BrokerSettings(url=amqp_url, namespace=stack_topology.namespace),  # type: ignore[arg-type]
            outbox=OutboxSettings(poll_interval_s=0.1),
            service=ServiceSettings(graceful_timeout_s=5),
        )
    )
    gateway = build_gateway(
        gateway_settings(gateway_database_url, amqp_url, stack_topology, telegram, store_root)
    )
    events = EventLog(amqp_url, stack_topology)
    await events.start()
    broker = create_broker(BrokerSettings(url=amqp_url))  # type: ignore[arg-type]
    await broker.connect()
    publisher = EventPublisher(
        broker, stack_topology.events_exchange, source="gpu_runner", timeout_s=10
    )
    async with billing.app, jobs, gateway.app:
        yield Stack(telegram, events, publisher, gateway, store_root, billing, yookassa)
    await broker.stop()
    await events.stop()
    await yookassa.stop()
