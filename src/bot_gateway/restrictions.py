"""Repeated refusals slow a user down, then suspend them for a time the operator sets; operators
ban (with a reason) and unban. Every decision goes into the audit log (`gateway_moderation_log`),
refusals with their verdict and scores.

`standing` is the pure rule; `Restrictions` reads and writes the gateway's tables, and keeps a
free user's standing for `cache_s` so a quick user's taps do not each cost a query."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from bot_gateway.models import ModerationDecision, UserRestriction
from contracts.events import ModerationRefused, UserRestricted
from messaging.unit_of_work import UnitOfWork
from moderation import ModerationSettings

OPERATOR_NAME = r"[^A-Za-z0-9_.@-]"
"""What an operator's name may not hold in the public events (`OperatorName`)."""


class Kind(Enum):
    ok = "ok"
    slowed = "slowed"
    suspended = "suspended"
    banned = "banned"


@dataclass(frozen=True)
class Standing:
    kind: Kind
    until: datetime | None = None
    reason: str = ""


OK = Standing(Kind.ok)


@dataclass(frozen=True)
class Policy:
    window: timedelta
    slowdown_after: int
    slowdown: timedelta
    suspend_after: int
    suspension: timedelta

    @classmethod
    def of(cls, settings: ModerationSettings) -> Policy:
        return cls(
            window=timedelta(seconds=settings.refusal_window_s),
            slowdown_after=settings.slowdown_after,
            slowdown=timedelta(seconds=settings.slowdown_s),
            suspend_after=settings.suspend_after,
            suspension=timedelta(seconds=settings.suspension_s),
        )


def standing(
    now: datetime,
    banned_reason: str | None,
    suspended_until: datetime | None,
    refusals: Sequence[datetime],
    policy: Policy,
) -> Standing:
    """Banned, else suspended, else slowed down after enough recent refusals, else free."""
    if banned_reason is not None:
        return Standing(Kind.banned, reason=banned_reason)
    if suspended_until is not None and suspended_until > now:
        return Standing(Kind.suspended, until=suspended_until)
    recent = [at for at in refusals if at > now - policy.window]
    if len(recent) >= policy.slowdown_after and (until := max(recent) + policy.slowdown) > now:
        return Standing(Kind.slowed, until=until)
    return OK


def suspends(refusals_in_window: int, policy: Policy) -> bool:
    return refusals_in_window >= policy.suspend_after


def utcnow() -> datetime:
    return datetime.now(UTC)


class Restrictions:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        policy: Policy,
        *,
        clock: Callable[[], datetime] = utcnow,
        cache_s: float = 2.0,
    ) -> None:
        self._unit_of_work = unit_of_work
        self.policy = policy
        self.clock = clock
        self._cache_s = cache_s
        self._known: dict[int, tuple[float, Standing]] = {}

    @classmethod
    def of(
        cls, unit_of_work: Callable[[], UnitOfWork], settings: ModerationSettings
    ) -> Restrictions:
        return cls(unit_of_work, Policy.of(settings), cache_s=settings.standing_cache_s)

    async def standing(self, telegram_id: int) -> Standing:
        """The user's standing now (a free one remembered for `cache_s`)."""
        remembered = self._known.get(telegram_id)
        if remembered is not None and time.monotonic() - remembered[0] < self._cache_s:
            return remembered[1]
        now = self.clock()
        async with self._unit_of_work() as uow:
            restriction = (
                await uow.read(
                    select(UserRestriction).where(UserRestriction.telegram_id == telegram_id)
                )
            ).first()
            refusals = await self._refusals(uow, telegram_id, now)
        found = standing(
            now,
            restriction.banned_reason if restriction else None,
            restriction.suspended_until if restriction else None,
            refusals,
            self.policy,
        )
        if found is OK:  # the rare restricted user is read each time: a lift shows at once
            self._remember(telegram_id, found)
        return found

    async def refused(
        self,
        telegram_id: int,
        subject: str,
        category: str,
        detail: str,
        *,
        job_id: int | None = None,
        scores: dict[str, float] | None = None,
        check: str = "",
    ) -> Standing:
        """Log a refusal (and announce it: ModerationRefused); enough of them in the window
        suspend the user (UserRestricted). Their standing after."""
        now = self.clock()
        async with self._unit_of_work() as uow:
            logged = await uow.execute(
                insert(ModerationDecision)
                .values(
                    telegram_id=telegram_id,
                    subject=subject,
                    decision="refused",
                    category=category,
                    detail=detail,
                    job_id=job_id,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["job_id"])
                .returning(ModerationDecision.id)
            )
            if logged.first() is not None:
                uow.emit(
                    ModerationRefused(
                        telegram_id=telegram_id,
                        subject=subject,  # prompt, photo, result
                        category=category[:64],
                        scores=scores or {},
                        check=check[:100],
                        job_id=job_id,
                    )
                )
                refusals = await self._refusals(uow, telegram_id, now)
                if suspends(len(refusals), self.policy):
                    until = now + self.policy.suspension
                    await self._restrict(uow, telegram_id, suspended_until=until, now=now)
                    why = f"{len(refusals)} refusals within {self.policy.window}"
                    await self._log(uow, telegram_id, "suspended", why, "moderation", now)
                    uow.emit(
                        UserRestricted(
                            telegram_id=telegram_id,
                            restriction="suspended",
                            reason=why,
                            decided_by="moderation",
                            until=until,
                        )
                    )
            await uow.commit()
        self._known.pop(telegram_id, None)
        return await self.standing(telegram_id)

    async def ban(
        self,
        telegram_id: int,
        reason: str,
        operator: str,
        *,
        request_id: uuid.UUID | None = None,
        uow: UnitOfWork | None = None,
    ) -> None:
        """Close the bot to the user (UserRestricted); in `uow` when given (an operator's
        command, applied with its inbox mark), else in a unit of its own."""
        now = self.clock()
        async with self._unit(uow) as unit:
            await self._restrict(
                unit, telegram_id, banned_reason=reason, banned_by=operator, now=now
            )
            await self._log(unit, telegram_id, "banned", reason, operator, now)
            unit.emit(
                UserRestricted(
                    request_id=request_id,
                    telegram_id=telegram_id,
                    restriction="banned",
                    reason=reason,
                    decided_by=public_name(operator),
                ),
                correlation_id=str(request_id) if request_id else None,
            )
            await unit.commit()
        self._known.pop(telegram_id, None)

    async def suspend(self, telegram_id: int, until: datetime, reason: str, operator: str) -> None:
        now = self.clock()
        async with self._unit_of_work() as uow:
            await self._restrict(uow, telegram_id, suspended_until=until, now=now)
            detail = f"until {until:%F %H:%M} UTC: {reason}"
            await self._log(uow, telegram_id, "suspended", detail, operator, now)
            uow.emit(
                UserRestricted(
                    telegram_id=telegram_id,
                    restriction="suspended",
                    reason=reason,
                    decided_by=public_name(operator),
                    until=until,
                )
            )
            await uow.commit()
        self._known.pop(telegram_id, None)

    async def unban(
        self,
        telegram_id: int,
        reason: str,
        operator: str,
        *,
        request_id: uuid.UUID | None = None,
        uow: UnitOfWork | None = None,
    ) -> bool:
        """Lift a ban or a suspension (UserRestricted); False when there was none."""
        now = self.clock()
        async with self._unit(uow) as unit:
            lifted = await unit.execute(
                delete(UserRestriction)
                .where(UserRestriction.telegram_id == telegram_id)
                .returning(UserRestriction.telegram_id)
            )
            if lifted.first() is None:
                return False
            await self._log(unit, telegram_id, "unbanned", reason, operator, now)
            unit.emit(
                UserRestricted(
                    request_id=request_id,
                    telegram_id=telegram_id,
                    restriction="unbanned",
                    reason=reason,
                    decided_by=public_name(operator),
                ),
                correlation_id=str(request_id) if request_id else None,
            )
            await unit.commit()
        self._known.pop(telegram_id, None)
        return True

    @contextlib.asynccontextmanager
    async def _unit(self, uow: UnitOfWork | None) -> AsyncIterator[UnitOfWork]:
        if uow is not None:
            yield uow
            return
        async with self._unit_of_work() as own:
            yield own

    async def log(self, telegram_id: int | None = None, limit: int = 50) -> list[Any]:
        """The newest decisions first, one user's or everyone's."""
        query = select(ModerationDecision).order_by(ModerationDecision.id.desc()).limit(limit)
        if telegram_id is not None:
            query = query.where(ModerationDecision.telegram_id == telegram_id)
        async with self._unit_of_work() as uow:
            return list((await uow.read(query)).all())

    async def _refusals(self, uow: UnitOfWork, telegram_id: int, now: datetime) -> list[datetime]:
        """The refusals in the window, since an operator last lifted a restriction (a lift
        starts the count afresh)."""
        rows = await uow.read(
            select(ModerationDecision.decision, ModerationDecision.created_at)
            .where(
                ModerationDecision.telegram_id == telegram_id,
                ModerationDecision.decision.in_(("refused", "unbanned")),
                ModerationDecision.created_at > now - self.policy.window,
            )
            .order_by(ModerationDecision.id)
        )
        refusals: list[datetime] = []
        for row in rows:
            refusals = [*refusals, row.created_at] if row.decision == "refused" else []
        return refusals

    async def _restrict(
        self, uow: UnitOfWork, telegram_id: int, *, now: datetime, **values: Any
    ) -> None:
        statement = insert(UserRestriction).values(
            telegram_id=telegram_id, updated_at=now, **values
        )
        await uow.execute(
            statement.on_conflict_do_update(
                index_elements=["telegram_id"], set_={**values, "updated_at": now}
            )
        )

    async def _log(
        self,
        uow: UnitOfWork,
        telegram_id: int,
        decision: str,
        detail: str,
        actor: str,
        now: datetime,
    ) -> None:
        await uow.execute(
            insert(ModerationDecision).values(
                telegram_id=telegram_id,
                subject="account",
                decision=decision,
                detail=detail,
                actor=actor,
                created_at=now,
            )
        )

    def _remember(self, telegram_id: int, found: Standing) -> None:
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[telegram_id] = (time.monotonic(), found)


def public_name(operator: str) -> str:
    """An operator's name as the public events carry it (letters, digits, `_.@-`)."""
    return re.sub(OPERATOR_NAME, "_", operator)[:100] or "operator"
