"""Billing on the real PostgreSQL and RabbitMQ, with the real `yookassa` SDK against a fake API.

Billing gets a database of its own (its audit looks at every account, so nobody else's rows
may be there); every test gets its own broker namespace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.app import Billing, Settings, build
from contracts.topology import Topology
from messaging.broker import create_broker, declare_topology
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import make_settings
from support.database import DatabaseFactory, engine_at, migrated_database


@pytest.fixture(scope="session")
async def billing_database_url(databases: DatabaseFactory) -> str:
    return await migrated_database(databases, "billing")


@pytest.fixture(scope="session")
async def billing_engine(billing_database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_at(billing_database_url) as engine:
        yield engine


@pytest.fixture
async def fake_yookassa() -> AsyncIterator[YooKassaSandbox]:
    fake = YooKassaSandbox()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def settings(
    billing_database_url: str, amqp_url: str, topology: Topology, fake_yookassa: YooKassaSandbox
) -> Settings:
    return make_settings(billing_database_url, amqp_url, topology, fake_yookassa)


@pytest.fixture
async def billing(settings: Settings) -> AsyncIterator[Billing]:
    """The billing service, started: consuming, serving rpc, relaying its outbox."""
    service = build(settings)
    async with service.app:
        yield service


@pytest.fixture
async def sender(amqp_url: str, topology: Topology) -> AsyncIterator[EventPublisher]:
    """Publishes events onto the test's exchange, as the other services would."""
    broker = create_broker(BrokerSettings(url=amqp_url))  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    await broker.connect()
    yield EventPublisher(broker, topology.events_exchange, source="test", timeout_s=10)
    await broker.stop()
