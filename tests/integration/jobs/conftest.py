"""Jobs on the real PostgreSQL and RabbitMQ: its own database, a namespace per test, the
service running in process, and the test playing the gateway, billing and the runners."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.topology import Topology
from jobs.app import Settings as JobsApp
from jobs.app import create_app
from jobs.settings import JobsSettings
from messaging.broker import create_broker, declare_topology
from messaging.database import create_session_factory
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings, ServiceSettings
from support.database import DatabaseFactory, engine_at, migrated_database
from support.jobs_harness import EventLog, JobsPlayer

FAST = {
    "dispatch_interval_s": 0.1,
    "sweep_interval_s": 0.1,
    "retry_backoff_s": 0.05,
    "retry_backoff_max_s": 0.2,
}
"""Loops and backoffs at test pace."""

StartJobs = Callable[..., AbstractAsyncContextManager[None]]


@pytest.fixture(scope="session")
async def jobs_database_url(databases: DatabaseFactory) -> str:
    return await migrated_database(databases, "jobs")


@pytest.fixture(scope="session")
async def jobs_engine(jobs_database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_at(jobs_database_url) as engine:
        yield engine


@pytest.fixture(scope="session")
def jobs_sessions(jobs_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(jobs_engine)


@pytest.fixture(autouse=True)
async def clean_jobs_database(jobs_sessions: async_sessionmaker[AsyncSession]) -> None:
    """Every test starts empty: no job, preset, user, or unsent event of an earlier test."""
    async with jobs_sessions() as session, session.begin():
        await session.execute(
            text(
                "TRUNCATE job_transitions, jobs, presets, jobs_outbox, jobs_inbox, users "
                "RESTART IDENTITY CASCADE"
            )
        )
        # users belongs to billing; here it only satisfies the legacy foreign key
        await session.execute(
            text("INSERT INTO users (telegram_id, username, balance) "
                 "SELECT 1000 + n, 'user' || n, 0 FROM generate_series(1, 20) AS n")
        )  # fmt: skip


@pytest.fixture
async def retouch_preset(jobs_sessions: async_sessionmaker[AsyncSession]) -> int:
    """One enabled edit preset, 30 credits, on qwen_edit_2511 (after the clean): its id."""
    async with jobs_sessions() as session, session.begin():
        return int(
            await session.scalar(
                text(
                    "INSERT INTO presets (category, name, prompt, icon, price, order_index, "
                    "workflow_type, enabled) VALUES ('фото', 'Ретушь', 'Retouch the portrait', "
                    "'✨', 30, 1, 'qwen_edit_2511', true) RETURNING id"
                )
            )
        )


@pytest.fixture
async def events(amqp_url: str, topology: Topology) -> AsyncIterator[EventLog]:
    """Every event published in the test's namespace, in arrival order."""
    await declare_topology(amqp_url, topology)
    log = EventLog(amqp_url, topology)
    await log.start()
    yield log
    await log.stop()


@pytest.fixture
async def player(
    amqp_url: str,
    topology: Topology,
    events: EventLog,
    jobs_sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[JobsPlayer]:
    broker = create_broker(BrokerSettings(url=amqp_url))  # type: ignore[arg-type]
    await broker.connect()
    publisher = EventPublisher(broker, topology.events_exchange, source="test", timeout_s=10)
    yield JobsPlayer(publisher, events, jobs_sessions)
    await broker.stop()


@pytest.fixture
def jobs_settings() -> Callable[..., JobsSettings]:
    def make(**overrides: Any) -> JobsSettings:
        return JobsSettings(**{**FAST, **overrides})

    return make


@pytest.fixture
def start_jobs(
    jobs_database_url: str,
    amqp_url: str,
    topology: Topology,
    jobs_settings: Callable[..., JobsSettings],
) -> StartJobs:
    """`async with start_jobs(**settings):` runs the real jobs service in process."""

    @asynccontextmanager
    async def running(**overrides: Any) -> AsyncIterator[None]:
        app = create_app(
            JobsApp(
                jobs=jobs_settings(**overrides),
                database=DatabaseSettings(url=jobs_database_url),  # type: ignore[arg-type]
                broker=BrokerSettings(url=amqp_url, namespace=topology.namespace),  # type: ignore[arg-type]
                outbox=OutboxSettings(poll_interval_s=0.1),
                service=ServiceSettings(graceful_timeout_s=5),
            )
        )
        async with app:
            yield

    return running


@pytest.fixture
async def jobs(start_jobs: StartJobs) -> AsyncIterator[None]:
    """The jobs service with the test defaults."""
    async with start_jobs():
        yield
