"""The one metadata every service's models share, and engine and session construction."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from messaging.settings import DatabaseSettings

# PostgreSQL's own default names, so the customer's existing database keeps matching.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "%(table_name)s_%(column_0_name)s_key",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Shared so cross-service foreign keys of the legacy schema resolve; each table has one owner."""


def create_engine(settings: DatabaseSettings, application_name: str = "imagebot") -> AsyncEngine:
    """The engine of one process; `application_name` names its connections in PostgreSQL
    (`pg_stat_activity`, logs)."""
    return create_async_engine(
        settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        max_overflow=0,  # DATABASE_POOL_SIZE is the most a process holds: sizing stays simple
        # No pre-ping: it costs a round trip per checkout, and a connection that died is
        # already handled: consumers retry connection errors in place (`is_transient`).
        pool_pre_ping=False,
        echo=settings.echo,
        connect_args={"server_settings": {"application_name": application_name}},
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


UNIQUE_VIOLATION = "23505"


def unique_violation(error: IntegrityError, table: str) -> bool:
    """Whether `error` is a unique key violated in `table` (asyncpg names the table)."""
    cause = error.orig.__cause__ if error.orig is not None else None
    return getattr(error.orig, "sqlstate", None) == UNIQUE_VIOLATION and (
        getattr(cause, "table_name", None) == table
    )
