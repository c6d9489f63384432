"""Shared fixtures: the real PostgreSQL and RabbitMQ, isolated per run and per test.

`DATABASE_URL` / `AMQP_URL` point at servers; without them testcontainers starts them when a
Docker engine answers. Otherwise integration tests fail (never skip) naming the variables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.topology import Topology, build_topology
from messaging.broker import delete_topology
from messaging.database import create_session_factory
from messaging.settings import DatabaseSettings
from support.database import RUN_ID, DatabaseFactory, engine_at, migrated_database

ROOT = Path(__file__).resolve().parents[1]
MISSING_SERVICES = (
    "integration tests need PostgreSQL and RabbitMQ: set DATABASE_URL "
    "(e.g. postgresql://postgres@127.0.0.1:5432/postgres) and AMQP_URL "
    "(e.g. amqp://guest:guest@127.0.0.1:5672/), or run a Docker engine for testcontainers"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = Path(str(item.path)).relative_to(ROOT / "tests").parts[0]
        if layer in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, layer))


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server URL (asyncpg dialect) whose user may create databases."""
    if url := os.environ.get("DATABASE_URL"):
        yield DatabaseSettings(url=url).url.get_secret_value()  # type: ignore[arg-type]
        return
    if not _docker_answers():
        pytest.fail(MISSING_SERVICES, pytrace=False)
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15", driver="asyncpg") as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if url := os.environ.get("AMQP_URL"):
        yield url
        return
    if not _docker_answers():
        pytest.fail(MISSING_SERVICES, pytrace=False)
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13") as container:
        params = container.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"


@pytest.fixture(scope="session")
async def databases(postgres_server_url: str) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(postgres_server_url)
    yield factory
    await factory.drop_all()


@pytest.fixture(scope="session")
async def database_url(databases: DatabaseFactory) -> str:
    """The run's database, migrated to head."""
    return await migrated_database(databases, "main")


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_at(database_url) as engine:
        yield engine


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
async def topology(amqp_url: str) -> AsyncIterator[Topology]:
    """A topology under a namespace of this test's own; its queues are deleted afterwards."""
    topology = build_topology(f"test-{RUN_ID}-{uuid.uuid4().hex[:6]}")
    yield topology
    await delete_topology(amqp_url, topology)
