"""One transaction per message: state changes, the events they cause, and the inbox mark."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Envelope, Event, RawEnvelope, new_envelope
from messaging.tables import DeliveryTables


class UnitOfWork:
    """Rolls back unless committed; emitted events reach the outbox in the same commit, and
    `on_commit` receives them after it (the relay publishes them from memory)."""

    session: AsyncSession

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tables: DeliveryTables,
        *,
        source: str,
        on_commit: Callable[[Sequence[tuple[str, RawEnvelope]]], None] = lambda rows: None,
    ) -> None:
        self._sessions = sessions
        self._tables = tables
        self._source = source
        self._on_commit = on_commit
        self.cause: Envelope[Any] | None = None
        self._pending: list[tuple[str, RawEnvelope]] = []

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        self._pending = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.session.rollback()
        await self.session.close()

    def emit(self, event: Event, *, correlation_id: str | None = None) -> RawEnvelope:
        """Record `event` for publication when this unit of work commits."""
        envelope = new_envelope(
            event, source=self._source, cause=self.cause, correlation_id=correlation_id
        )
        self._pending.append((event.routing_key(), envelope))
        return envelope

    async def claim(self, event_id: uuid.UUID, event_type: str) -> bool:
        """Mark an incoming event as handled; False when it already was (a duplicate)."""
        inbox = self._tables.inbox
        connection = await self.session.connection()  # Core: no ORM overhead on the hot path
        claimed = await connection.execute(
            pg_insert(inbox)
            .values(event_id=event_id, event_type=event_type)
            .on_conflict_do_nothing()
            .returning(inbox.c.event_id)
        )
        return claimed.first() is not None

    async def commit(self) -> None:
        if self._pending:
            connection = await self.session.connection()
            await connection.execute(
                insert(self._tables.outbox),
                [
                    {
                        "id": envelope.id,
                        "routing_key": routing_key,
                        "envelope": envelope.model_dump(mode="json"),
                    }
                    for routing_key, envelope in self._pending
                ],
            )
        await self.session.commit()
        if self._pending:
            committed, self._pending = self._pending, []
            self._on_commit(committed)
