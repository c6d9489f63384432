"""Throwaway test databases and migrations run from tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from messaging.database import create_engine
from messaging.settings import DatabaseSettings

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = uuid.uuid4().hex[:8]
"""Names every database and broker object this test run creates."""


class DatabaseFactory:
    """Creates throwaway databases on the test server and drops them afterwards."""

    def __init__(self, server_url: str) -> None:
        self._server = make_url(server_url)
        self._created: list[str] = []

    def _dsn(self, database: str) -> str:
        return self._server.set(drivername="postgresql", database=database).render_as_string(
            hide_password=False
        )

    async def create(self, label: str) -> str:
        name = f"imagebot_test_{RUN_ID}_{label}_{len(self._created)}"
        connection = await asyncpg.connect(self._dsn(self._server.database or "postgres"))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self._created.append(name)
        return self._server.set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        connection = await asyncpg.connect(self._dsn(self._server.database or "postgres"))
        try:
            for name in self._created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


async def migrate(database_url: str, revision: str = "head", *, down: bool = False) -> None:
    """Run alembic in a worker thread: its environment runs its own event loop."""
    operation = command.downgrade if down else command.upgrade
    await asyncio.to_thread(operation, alembic_config(database_url), revision)


async def migrated_database(databases: DatabaseFactory, label: str) -> str:
    """A throwaway database of its own, migrated to head."""
    url = await databases.create(label)
    await migrate(url)
    return url


@asynccontextmanager
async def engine_at(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=url))  # type: ignore[arg-type]
    try:
        yield engine
    finally:
        await engine.dispose()
