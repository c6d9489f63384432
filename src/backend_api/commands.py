"""Operators' writes: each is recorded in the audit log and sent to its owner as a command, in
one transaction (the outbox), under the caller's idempotency key; the owner's answer (an event)
settles the audit entry, and the caller waits a moment for it.

The same key again returns the first command's entry and sends nothing; the same key with other
parameters is a conflict.

A write that moves more than `BACKEND_API_APPROVAL_ABOVE` (its `Amount`, declared by the caller
of `submit`) is held instead: its entry `awaiting_approval` keeps the command, unsent, until a
second operator approves it (then it is sent, once) or someone rejects it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Select, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend_api.models import AuditEntry
from contracts.envelope import Event
from contracts.events import (
    CATALOG,
    CreditsAdjusted,
    CreditsAdjustedV1,
    CreditsAdjustmentRefused,
    CreditsAdjustmentRefusedV1,
    CreditsAdjustmentRequested,
    credits_text,
)
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

ADJUST_CREDITS = "credits.adjust"
AUDIT = cast("Table", AuditEntry.__table__)
AWAITING = "awaiting_approval"
CREDITS = "credits"


class IdempotencyConflictError(Exception):
    """The key was used before for a different command."""


class SelfApprovalError(Exception):
    """The operator who asked for a write cannot approve it: a second operator must."""


class AlreadyDecidedError(Exception):
    """The write is not awaiting approval (any more): approved, rejected, or never held."""


@dataclass(frozen=True)
class Amount:
    """How much a write moves, for the approval rule: `value` (either sign) in `unit`:
    "credits", or a currency's code with the value in its minor units ("RUB": kopecks, "XTR":
    Stars)."""

    value: int
    unit: str


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
    approver: str | None = None
    command: dict[str, Any] | None = None


class Commands:
    def __init__(
        self,
        runtime: ServiceRuntime,
        *,
        wait_s: float,
        approval_above: Mapping[str, int] | None = None,
    ) -> None:
        self._runtime = runtime
        self._sessions: async_sessionmaker[AsyncSession] = runtime.sessions
        self._wait_s = wait_s
        self._approval_above = dict(approval_above or {})

    def needs_approval(self, amount: Amount | None) -> bool:
        """Whether a write of `amount` waits for a second operator (above its unit's limit)."""
        limit = self._approval_above.get(amount.unit) if amount is not None else None
        return amount is not None and limit is not None and abs(amount.value) > limit

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
            key,
            operator,
            ADJUST_CREDITS,
            str(telegram_id),
            payload,
            reason,
            command,
            amount=Amount(credits, CREDITS),
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
        *,
        amount: Amount | None = None,
    ) -> AuditRecord:
        """Record the action and send `command` to its owner, once per `key` (the same key with
        other parameters: `IdempotencyConflictError`); the entry, as settled as it got within
        the wait. Every operator write goes through here. A write that moves money or credits
        says how much in `amount`: above the configured limit it is held `awaiting_approval`
        (not sent) until a second operator approves it."""
        held = self.needs_approval(amount)
        await self._record(key, operator, action, target, payload, reason, command, held=held)
        return await self.wait(key)

    async def approve(self, key: uuid.UUID, approver: str) -> AuditRecord:
        """Send the held write of `key` (once, however many approve it at the same time); the
        entry, as settled as it got within the wait. `KeyError`: no such write;
        `SelfApprovalError`: `approver` asked for it; `AlreadyDecidedError`: not held (any
        more)."""
        async with self._runtime.unit_of_work() as uow:
            approved = (
                await uow.execute(
                    update(AUDIT)
                    .where(
                        AUDIT.c.request_id == key,
                        AUDIT.c.status == AWAITING,
                        AUDIT.c.operator != approver,
                    )
                    .values(status="pending", approver=approver)
                    .returning(AUDIT.c.command)
                )
            ).first()
            if approved is not None:
                held = approved.command
                model = CATALOG[(held["type"], held["version"])]
                uow.emit(model.model_validate(held["data"]), correlation_id=str(key))
                await uow.commit()
                return await self.wait(key)
        raise self._why_not_held(await self.entry(key), key, approver)

    async def reject(self, key: uuid.UUID, operator: str) -> AuditRecord:
        """Drop the held write of `key` unsent (its requester withdrawing it, or a second
        operator refusing it); `KeyError` / `AlreadyDecidedError` as `approve`."""
        async with self._runtime.unit_of_work() as uow:
            rejected = (
                await uow.execute(
                    update(AUDIT)
                    .where(AUDIT.c.request_id == key, AUDIT.c.status == AWAITING)
                    .values(status="rejected", approver=operator, decided_at=datetime.now(UTC))
                    .returning(AUDIT.c.id)
                )
            ).first()
            await uow.commit()
        record = await self.entry(key)
        if rejected is None:
            raise self._why_not_held(record, key, None)
        assert record is not None
        return record

    @staticmethod
    def _why_not_held(
        record: AuditRecord | None, key: uuid.UUID, approver: str | None
    ) -> Exception:
        if record is None:
            return KeyError(str(key))
        if record.status == AWAITING and record.operator == approver:
            return SelfApprovalError(str(key))
        return AlreadyDecidedError(str(key))

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
        *,
        held: bool = False,
    ) -> bool:
        """True when this call recorded it (and sent `command`, if any; or, `held`, kept it
        unsent for approval); False for the same command again."""
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
                    status=AWAITING if held else "pending",
                    command=_kept(command) if held else None,
                )
                .on_conflict_do_nothing(index_elements=[AUDIT.c.request_id])
                .returning(AUDIT.c.id)
            )
            if inserted.first() is not None:
                if command is not None and not held:
                    uow.emit(command, correlation_id=str(key))
                await uow.commit()
                return True
            first = (
                await uow.execute(
                    select(
                        AUDIT.c.operator,
                        AUDIT.c.action,
                        AUDIT.c.target,
                        AUDIT.c.payload,
                        AUDIT.c.reason,
                    ).where(AUDIT.c.request_id == key)
                )
            ).one()
            # the target too: a workflow's pause or a DLQ's replay names it there only
            if (first.operator, first.action, first.target, first.payload, first.reason) != (
                operator,
                action,
                target,
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
        status: str | None = None,
    ) -> tuple[list[AuditRecord], int]:
        query: Select[Any] = select(AUDIT)
        if status is not None:
            query = query.where(AUDIT.c.status == status)
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


def _kept(command: Event | None) -> dict[str, Any] | None:
    """A command as the audit row keeps it while it awaits approval."""
    if command is None:
        return None
    return {
        "type": command.event_type,
        "version": command.event_version,
        "data": command.model_dump(mode="json"),
    }


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
            uow,
            event.request_id,
            "applied",
            {"user_id": event.user_id, "balance": credits_text(event.balance)},
        )

    @runtime.consumer.on(CreditsAdjustmentRefused)
    async def refused(event: CreditsAdjustmentRefused, uow: UnitOfWork) -> None:
        await settle(
            uow,
            event.request_id,
            "refused",
            {
                "reason": event.reason.value,
                "balance": None if event.balance is None else credits_text(event.balance),
            },
        )

    # their v1 copies, published beside v2 (exact balances): acknowledged, nothing done
    runtime.consumer.superseded(CreditsAdjustedV1, CreditsAdjustmentRefusedV1)
