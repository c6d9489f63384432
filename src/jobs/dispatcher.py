"""Handing paid jobs to the GPU queues, fairly, and giving up on attempts past their deadline.

Both loops run in every replica: each user is served under that user's advisory lock (a busy
user is skipped, not waited for), so two replicas never dispatch past a user's cap.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from contracts.events import JobDispatched, JobQueued
from jobs.domain import (
    WITH_DEADLINE,
    JobFacts,
    Stage,
    eta_seconds,
    fair_order,
    free_slots,
    on_dispatch,
)
from jobs.models import Job
from jobs.repository import JobsRepository, deadline
from jobs.settings import JobsSettings
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


def facts(job: Job) -> JobFacts:
    if job.stage is None:
        raise ValueError(f"job {job.id} predates the lifecycle")
    return JobFacts(stage=Stage(job.stage), retry_count=job.retry_count or 0)


def correlation(job: Job) -> str:
    """Every event about a job carries its request id, so one request reads as one story."""
    return str(job.request_id) if job.request_id is not None else f"job-{job.id}"


class Dispatcher:
    def __init__(self, settings: JobsSettings) -> None:
        self._settings = settings

    async def dispatch_user(
        self, repository: JobsRepository, uow: UnitOfWork, user_id: int, now: datetime
    ) -> int:
        """Fill the user's free slots with their oldest ready jobs; the user's lock is held."""
        in_flight = await repository.in_flight_jobs(user_id)
        ready = await repository.ready_jobs(
            user_id, free_slots(in_flight, self._settings.max_active_jobs_per_user)
        )
        for job in ready:
            if on_dispatch(facts(job)) is None:
                continue
            await repository.move(
                job,
                Stage.dispatched,
                reason="dispatched",
                event_id=None,
                dispatched_at=now,
                deadline_at=deadline(now, self._settings.queue_timeout_s),
                next_attempt_at=None,
                started_at=None,
            )
            await self._announce(repository, uow, job)
        return len(ready)

    async def _announce(self, repository: JobsRepository, uow: UnitOfWork, job: Job) -> None:
        workflow = job.workflow_type or ""
        uow.emit(
            JobDispatched(
                job_id=job.id,
                attempt=(job.retry_count or 0) + 1,
                workflow_type=workflow,
                prompt=job.prompt or "",
                image_key=job.image_path,
                seed=job.seed,
            ),
            correlation_id=correlation(job),
        )
        position = await repository.position_in_line(job)
        eta = eta_seconds(
            position,
            await repository.recent_durations_ms(workflow, self._settings.eta_sample_size),
            await repository.busy_runners(workflow),
            self._settings.default_duration_s,
        )
        uow.emit(
            JobQueued(
                job_id=job.id,
                user_id=job.user_id or 0,
                chat_id=job.chat_id or 0,
                position=position,
                eta_seconds=eta,
            ),
            correlation_id=correlation(job),
        )

    async def dispatch_ready(self, unit_of_work: Callable[[], UnitOfWork]) -> int:
        """One pass: serve the users with a free slot and a ready job, fewest in flight first."""
        cap = self._settings.max_active_jobs_per_user
        async with unit_of_work() as uow:
            candidates = await JobsRepository(uow.session).users_with_ready_jobs(
                cap, self._settings.dispatch_batch
            )
        dispatched = 0
        for user in fair_order(candidates, cap):
            async with unit_of_work() as uow:
                repository = JobsRepository(uow.session)
                if not await repository.try_lock_user(user.user_id):
                    continue  # a handler or another replica is serving this user right now
                dispatched += await self.dispatch_user(
                    repository, uow, user.user_id, await repository.now()
                )
                await uow.commit()
        return dispatched


class Sweeper:
    """Finds attempts past their deadline and hands them to `give_up`."""

    def __init__(
        self,
        settings: JobsSettings,
        give_up: Callable[[JobsRepository, UnitOfWork, Job, datetime], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._give_up = give_up

    async def sweep(self, unit_of_work: Callable[[], UnitOfWork]) -> int:
        async with unit_of_work() as uow:
            overdue = await JobsRepository(uow.session).overdue_jobs(self._settings.dispatch_batch)
        swept = 0
        for job_id, user_id in overdue:
            async with unit_of_work() as uow:
                repository = JobsRepository(uow.session)
                await repository.lock_user(user_id)
                job = await repository.lock_job(job_id)
                now = await repository.now()
                if job is None or facts(job).stage not in WITH_DEADLINE:
                    continue
                if job.deadline_at is None or job.deadline_at >= now:
                    continue  # it moved on since we looked
                await self._give_up(repository, uow, job, now)
                await uow.commit()
                swept += 1
        return swept
