"""Operators' writes: each is recorded in the audit log and sent to its owner as a command, in
one transaction (the outbox), under the caller's idempotency key; the owner's answer (an event)
settles the audit entry, and the caller waits a moment for it.

The same key again returns the first command's entry and sends nothing; the same key with other
parameters is a conflict.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Select, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend_api.models import AuditEntry
from contracts.envelope import Event
from contracts.events import CreditsAdjusted, CreditsAdjustmentRefused, CreditsAdjustmentRequested
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

ADJUST_CREDITS = "credits.adjust"
AUDIT = cast("Table", AuditEntry.__table__)


class IdempotencyConflictError(Exception):
    """The key was used before for a different command."""


@dataclass(frozen=True)
class AuditRecord:
    id: int
    request_id: uuid.UUID
    operator: str
    action: str
    target: str
    payload: dict[str, Any]
    reason: str
    status: str
    outcome: dict[str, Any] | None
    created_at: datetime
    decided_at: datetime | None


class Commands:
    def __init__(self, runtime: ServiceRuntime, *, wait_s: float) -> None:
        self._runtime = runtime
        self._sessions: async_sessionmaker[AsyncSession] = runtime.sessions
        self._wait_s = wait_s

    async def adjust_credits(
        self, *, key: uuid.UUID, operator: str, telegram_id: int, credits: int, reason: str
    ) -> AuditRecord:
        """Ask billing to move `credits` on the account of `telegram_id`; the audit entry, as
        settled as it got within the wait."""
        payload = {"telegram_id": telegram_id, "credits": credits}
        command = CreditsAdjustmentRequested(
            request_id=key,
            operator=operator,
            telegram_id=telegram_id,
            credits=credits,
            reason=reason,
        )
        return await self.submit(
            key, operator, ADJUST_CREDITS, str(telegram_id), payload, reason, command
        )

    async def submit(
        self,
        key: uuid.UUID,
        operator: str,
        action: str,
        target: str,
        payload: dict[str, Any],
        reason: str,
        command: Event,
    ) -> AuditRecord:
        """Record the action and send `command` to its owner, once per `key` (the same key with
        other parameters: `IdempotencyConflictError`); the entry, as settled as it got within
        the wait. Every operator write goes through here."""
        await self._record(key, operator, action, target, payload, reason, command)
        return await self.wait(key)

    async def perform(
        self,
        key: uuid.UUID,
        operator: str,
        action: str,
        target: str,
        payload: dict[str, Any],
        reason: str,
        act: Callable[[], Awaitable[tuple[str, dict[str, Any]]]],
    ) -> AuditRecord:
        """An action no service owns (the broker's dead letters): recorded like a command, then
        `act` runs here, once per `key`, and its (status, outcome) settles the entry. An
        exception settles it `refused` with what it said, and is raised again."""
        if await self._record(key, operator, action, target, payload, reason, None):
            try:
                status, outcome = await act()
            except Exception as exc:
                await self._settle_now(key, "refused", {"error": str(exc)})
                raise
            await self._settle_now(key, status, outcome)
        record = await self.entry(key)
        assert record is not None  # recorded above
        return record

    async def _settle_now(self, key: uuid.UUID, status: str, outcome: dict[str, Any]) -> None:
        async with self._runtime.unit_of_work() as uow:
            await settle(uow, key, status, outcome)
            await uow.commit()

    async def _record(
        self,
        key: uuid.UUID,
        operator: str,
        action: str,
        target: str,
        payload: dict[str, Any],
        reason: str,
        command: Event | None,
    ) -> bool:
        """True when this call recorded it (and sent `command`, if any); False for the same
        command again."""
        async with self._runtime.unit_of_work() as uow:
            inserted = await uow.execute(
                insert(AUDIT)
                .values(
                    request_id=key,
                    operator=operator,
                    action=action,
                    target=target,
                    payload=payload,
                    reason=reason,
                    status="pending",
                )
                .on_conflict_do_nothing(index_elements=[AUDIT.c.request_id])
                .returning(AUDIT.c.id)
            )
            if inserted.first() is not None:
                if command is not None:
                    uow.emit(command, correlation_id=str(key))
                await uow.commit()
                return True
            first = (
                await uow.execute(
                    select(AUDIT.c.operator, AUDIT.c.action, AUDIT.c.payload, AUDIT.c.reason).where(
                        AUDIT.c.request_id == key
                    )
                )
            ).one()
            if (first.operator, first.action, first.payload, first.reason) != (
                operator,
                action,
                payload,
                reason,
            ):
                raise IdempotencyConflictError(str(key))
            return False

    async def wait(self, key: uuid.UUID) -> AuditRecord:
        """The entry of `key`, once settled or after the wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while True:
            record = await self.entry(key)
            if record is None:
                raise KeyError(str(key))
            if record.status != "pending" or loop.time() >= deadline:
                return record
            await asyncio.sleep(0.05)

    async def entry(self, key: uuid.UUID) -> AuditRecord | None:
        async with self._sessions() as session:
            row = (await session.execute(select(AUDIT).where(AUDIT.c.request_id == key))).first()
        return AuditRecord(**row._mapping) if row is not None else None

    async def audit(
        self,
        *,
        operator: str | None,
        action: str | None,
        target: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[AuditRecord], int]:
        query: Select[Any] = select(AUDIT)
        if operator is not None:
            query = query.where(AUDIT.c.operator == operator)
        if action is not None:
            query = query.where(AUDIT.c.action == action)
        if target is not None:
            query = query.where(AUDIT.c.target == target)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = (
                await session.execute(query.order_by(AUDIT.c.id.desc()).offset(offset).limit(limit))
            ).all()
        return [AuditRecord(**row._mapping) for row in rows], int(total or 0)


async def settle(uow: UnitOfWork, key: uuid.UUID, status: str, outcome: dict[str, Any]) -> None:
    """The owner's answer to the command sent under `key`: `applied` or `refused`, with what
    it said. Each area's answer handlers call this."""
    await uow.execute(
        update(AUDIT)
        .where(AUDIT.c.request_id == key, AUDIT.c.status == "pending")
        .values(status=status, outcome=outcome, decided_at=datetime.now(UTC))
    )


def register(runtime: ServiceRuntime) -> None:
    """The owners' answers settle the audit entries."""

    @runtime.consumer.on(CreditsAdjusted)
    async def adjusted(event: CreditsAdjusted, uow: UnitOfWork) -> None:
        await settle(
            uow, event.request_id, "applied", {"user_id": event.user_id, "balance": event.balance}
        )

    @runtime.consumer.on(CreditsAdjustmentRefused)
    async def refused(event: CreditsAdjustmentRefused, uow: UnitOfWork) -> None:
        await settle(
            uow,
            event.request_id,
            "refused",
            {"reason": event.reason.value, "balance": event.balance},
        )
