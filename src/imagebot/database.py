"""Preparing a database for our migrations: create it when missing, adopt the customer's.

Their database was built by migrations we do not have, so it carries no revision of ours (or an
unknown one). Its shape tells where it stands in the seed's story, which our history replays:
`presets.order` (0001) → renamed to `order_index` (0002) → `workflow_type` added (0003) →
`users.telegram_id` widened (0004). We stamp that revision and upgrade from there.
"""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from messaging.settings import DatabaseSettings

SEED_TABLES = frozenset({"users", "presets", "jobs", "payment_logs", "payments"})


class AdoptionError(RuntimeError):
    """The database is neither empty, nor ours, nor a recognisable version of the seed."""


def seed_revision(connection: Connection, known_revisions: set[str]) -> str | None:
    """The revision of ours the database's shape matches; None if it is empty or already ours."""
    inspector = inspect(connection)
    tables = set(inspector.get_table_names())
    if "alembic_version" in tables:
        stamped = set(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
        if stamped and stamped <= known_revisions:
            return None
    present = SEED_TABLES & tables
    if not present:
        return None
    if present != SEED_TABLES:
        raise AdoptionError(f"seed tables missing: {', '.join(sorted(SEED_TABLES - present))}")
    presets = {column["name"] for column in inspector.get_columns("presets")}
    if "order" in presets:
        return "0001"
    if "order_index" not in presets:
        raise AdoptionError("presets has neither `order` nor `order_index`")
    if "workflow_type" not in presets:
        return "0002"
    telegram_id = next(c for c in inspector.get_columns("users") if c["name"] == "telegram_id")
    return "0004" if str(telegram_id["type"]) == "BIGINT" else "0003"


def adopt(config: Config) -> str | None:
    """Stamp a database built outside our history at the revision its shape matches.

    Returns the stamped revision, or None when there was nothing to adopt.
    """
    url = config.attributes.get("database_url") or DatabaseSettings().url.get_secret_value()
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}

    async def detect() -> str | None:
        engine = create_async_engine(DatabaseSettings(url=url).url.get_secret_value())
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(seed_revision, known)
        finally:
            await engine.dispose()

    revision = asyncio.run(detect())
    if revision is not None:
        command.stamp(config, revision, purge=True)
    return revision


async def ensure_database(url: str) -> bool:
    """Create the database `url` names if it does not exist yet; True if it was created."""
    target = make_url(DatabaseSettings(url=url).url.get_secret_value())
    dsn = target.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await connection.close()
        return False
    await _on_server(url, f'CREATE DATABASE "{target.database}"')
    return True


async def drop_database(url: str) -> None:
    """Drop the database `url` names, if it exists, disconnecting whoever still uses it."""
    target = make_url(DatabaseSettings(url=url).url.get_secret_value())
    await _on_server(url, f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')


async def _on_server(url: str, statement: str) -> None:
    """Run `statement` on the server's maintenance database (`postgres`)."""
    target = make_url(DatabaseSettings(url=url).url.get_secret_value())
    maintenance = await asyncpg.connect(
        target.set(drivername="postgresql", database="postgres").render_as_string(
            hide_password=False
        )
    )
    try:
        await maintenance.execute(statement)
    finally:
        await maintenance.close()
