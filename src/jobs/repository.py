"""SQL for presets and jobs; never commits (the unit of work does).

Every change to a user's jobs first takes that user's advisory lock (`lock_user`), then the job
rows: one lock order everywhere, so the per-user cap holds under concurrency without deadlocks,
and several replicas may run the same handlers and loops.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.domain import (
    IN_FLIGHT,
    LEGACY_STATUS,
    UNFINISHED,
    WITH_DEADLINE,
    PresetFacts,
    Stage,
    UserQueue,
)
from jobs.models import Job, JobStatus, JobTransition, Preset

USER_LOCK_SPACE = 0x4A0B
"""First key of the two-key advisory locks jobs takes per user (`pg_advisory_xact_lock`)."""
CATALOG_LOCK = (0x4A0B, 0)
"""Serializes catalog imports (user ids start at 1)."""


@dataclass(frozen=True)
class NewJob:
    request_id: uuid.UUID
    user_id: int
    telegram_id: int
    chat_id: int
    language: str
    preset_id: int | None
    prompt: str
    image_key: str | None
    price: int
    workflow_type: str
    seed: int
    payment_deadline: datetime


class JobsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- locks

    async def lock_user(self, user_id: int) -> None:
        """Wait for, then hold until commit, the right to change this user's jobs."""
        await self.session.execute(select(func.pg_advisory_xact_lock(USER_LOCK_SPACE, user_id)))

    async def try_lock_user(self, user_id: int) -> bool:
        locked = await self.session.execute(
            select(func.pg_try_advisory_xact_lock(USER_LOCK_SPACE, user_id))
        )
        return bool(locked.scalar_one())

    # --- presets

    async def preset(self, preset_id: int) -> PresetFacts | None:
        preset = await self.session.get(Preset, preset_id)
        if preset is None:
            return None
        return PresetFacts(
            id=preset.id,
            prompt=preset.prompt or "",
            price=preset.price,
            workflow_type=preset.workflow_type or Job.workflow_type.default or "",
            enabled=preset.enabled,
        )

    # --- jobs

    async def insert_job(self, job: NewJob) -> int | None:
        """The new job's id, or None when this request already has one (a duplicate)."""
        inserted = await self.session.execute(
            insert(Job)
            .values(
                request_id=job.request_id,
                user_id=job.user_id,
                telegram_id=job.telegram_id,
                chat_id=job.chat_id,
                language=job.language,
                preset_id=job.preset_id,
                prompt=job.prompt,
                image_path=job.image_key,
                price=job.price,
                workflow_type=job.workflow_type,
                seed=job.seed,
                stage=Stage.awaiting_payment.value,
                status=JobStatus.queued,
                retry_count=0,
                deadline_at=job.payment_deadline,
            )
            .on_conflict_do_nothing(index_elements=[Job.request_id])
            .returning(Job.id)
        )
        return inserted.scalar_one_or_none()

    async def owner_of(self, job_id: int) -> int | None:
        """Who owns a job (never changes, so it is read without a lock)."""
        owner = await self.session.execute(
            select(Job.user_id).where(Job.id == job_id, Job.stage.is_not(None))
        )
        return owner.scalar_one_or_none()

    async def lock_job(self, job_id: int) -> Job | None:
        """The job row, locked until commit; None for unknown and pre-lifecycle jobs."""
        job = await self.session.get(Job, job_id, with_for_update=True, populate_existing=True)
        return job if job is not None and job.stage is not None else None

    async def count_jobs(self, user_id: int, stages: frozenset[Stage]) -> int:
        counted = await self.session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.user_id == user_id, Job.stage.in_([stage.value for stage in stages]))
        )
        return int(counted.scalar_one())

    async def unfinished_jobs(self, user_id: int) -> int:
        return await self.count_jobs(user_id, UNFINISHED)

    async def in_flight_jobs(self, user_id: int) -> int:
        return await self.count_jobs(user_id, IN_FLIGHT)

    async def move(
        self,
        job: Job,
        to: Stage,
        *,
        reason: str,
        event_id: uuid.UUID | None,
        **changes: Any,
    ) -> None:
        """Change the job's stage (and the seed's status with it) and record the transition."""
        self.session.add(
            JobTransition(
                job_id=job.id,
                from_stage=job.stage,
                to_stage=to.value,
                attempt=(job.retry_count or 0) + 1,
                reason=reason[:100],
                event_id=event_id,
            )
        )
        job.stage = to.value
        job.status = JobStatus(LEGACY_STATUS[to])
        for name, value in changes.items():
            setattr(job, name, value)
        await self.session.flush()

    async def ready_jobs(self, user_id: int, limit: int) -> Sequence[Job]:
        """The user's paid jobs whose turn may come now, oldest first, locked."""
        if limit <= 0:
            return []
        ready = await self.session.execute(
            select(Job)
            .where(
                Job.user_id == user_id,
                Job.stage == Stage.waiting.value,
                or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= func.now()),
            )
            .order_by(Job.created_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        return ready.scalars().all()

    async def users_with_ready_jobs(self, cap: int, limit: int) -> list[UserQueue]:
        """Users under the cap with a paid job whose turn may have come, fewest in flight first."""
        waiting = (
            select(Job.user_id, func.min(Job.created_at).label("oldest"))
            .where(
                Job.stage == Stage.waiting.value,
                or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= func.now()),
            )
            .group_by(Job.user_id)
            .subquery()
        )
        in_flight = (
            select(func.count())
            .where(
                Job.user_id == waiting.c.user_id,
                Job.stage.in_([stage.value for stage in IN_FLIGHT]),
            )
            .scalar_subquery()
        )
        users = select(waiting.c.user_id, in_flight.label("in_flight"), waiting.c.oldest).subquery()
        rows = await self.session.execute(
            select(users)
            .where(users.c.in_flight < cap)
            .order_by(users.c.in_flight, users.c.oldest, users.c.user_id)
            .limit(limit)
        )
        return [UserQueue(row.user_id, row.in_flight, row.oldest) for row in rows]

    async def job_for_request(self, request_id: uuid.UUID) -> int | None:
        found = await self.session.execute(select(Job.id).where(Job.request_id == request_id))
        return found.scalar_one_or_none()

    async def record_created(self, job_id: int, event_id: uuid.UUID | None) -> None:
        self.session.add(
            JobTransition(
                job_id=job_id,
                from_stage=None,
                to_stage=Stage.awaiting_payment.value,
                attempt=1,
                reason="requested",
                event_id=event_id,
            )
        )
        await self.session.flush()

    async def overdue_jobs(self, limit: int) -> list[tuple[int, int]]:
        """(job id, user id) of attempts past their deadline."""
        rows = await self.session.execute(
            select(Job.id, Job.user_id)
            .where(
                Job.stage.in_([stage.value for stage in WITH_DEADLINE]),
                Job.deadline_at < func.now(),
            )
            .order_by(Job.deadline_at)
            .limit(limit)
        )
        return [(row.id, row.user_id) for row in rows]

    async def now(self) -> datetime:
        return (await self.session.execute(select(func.now()))).scalar_one()

    # --- position and ETA

    async def position_in_line(self, job: Job) -> int:
        """1 + the dispatched jobs of the same workflow handed over before this one."""
        ahead = await self.session.execute(
            select(func.count())
            .select_from(Job)
            .where(
                Job.workflow_type == job.workflow_type,
                Job.stage == Stage.dispatched.value,
                tuple_(Job.dispatched_at, Job.id) < tuple_(job.dispatched_at, job.id),
            )
        )
        return int(ahead.scalar_one()) + 1

    async def busy_runners(self, workflow_type: str) -> int:
        busy = await self.session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.workflow_type == workflow_type, Job.stage == Stage.processing.value)
        )
        return int(busy.scalar_one())

    async def recent_durations_ms(self, workflow_type: str, sample: int) -> list[int]:
        durations = await self.session.execute(
            select(Job.duration_ms)
            .where(Job.workflow_type == workflow_type, Job.duration_ms.is_not(None))
            .order_by(Job.finished_at.desc())
            .limit(sample)
        )
        return [int(value) for value in durations.scalars() if value is not None]

    # --- reads for the gateway

    async def recent_jobs(self, user_id: int, limit: int) -> Sequence[Job]:
        jobs = await self.session.execute(
            select(Job)
            .where(Job.user_id == user_id)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit)
        )
        return jobs.scalars().all()


def deadline(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


class CatalogRepository:
    """The presets table; imports hold `lock_catalog` so two never interleave."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_catalog(self) -> None:
        await self.session.execute(select(func.pg_advisory_xact_lock(*CATALOG_LOCK)))

    async def all_presets(self) -> Sequence[Preset]:
        """Every preset in display order: category, then order_index."""
        presets = await self.session.execute(
            select(Preset).order_by(Preset.category, Preset.order_index, Preset.id)
        )
        return presets.scalars().all()

    async def upsert(self, fields: dict[str, Any]) -> str:
        """Insert or update the preset named `fields["name"]` in its category.

        No unique constraint backs (category, name): existing databases may hold duplicates,
        so the first of them (lowest id) is the one updated; `lock_catalog` prevents races.
        """
        existing = (
            (
                await self.session.execute(
                    select(Preset)
                    .where(Preset.category == fields["category"], Preset.name == fields["name"])
                    .order_by(Preset.id)
                    .limit(1)
                )
            )
            .scalars()
            .first()
        )
        if existing is None:
            self.session.add(Preset(**fields))
            await self.session.flush()
            return "created"
        current = {name: getattr(existing, name) for name in fields}
        if current == fields:
            return "unchanged"
        for name, value in fields.items():
            setattr(existing, name, value)
        await self.session.flush()
        return "updated"
