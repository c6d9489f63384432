"""Handing paid jobs to the GPU queues, fairly, and giving up on attempts past their deadline.

Both loops run in every replica: each user is served under that user's advisory lock (a busy
user is skipped, not waited for), so two replicas never dispatch past a user's cap.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

from contracts.envelope import Event, RawEnvelope
from contracts.events import JobDispatched, JobDispatchedV1, JobQueued
from jobs.domain import WITH_DEADLINE, JobFacts, Stage, eta_seconds, fair_order
from jobs.metrics import ETA_SECONDS
from jobs.repository import Dispatched, JobRow, JobsRepository, Moved
from jobs.settings import JobsSettings
from messaging.consumer import is_transient
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


class Emitter(Protocol):
    """Where the events a change causes go: a unit of work's outbox, written on commit."""

    def emit(self, event: Event, *, correlation_id: str | None = None) -> RawEnvelope: ...


def facts(job: JobRow) -> JobFacts:
    return JobFacts(stage=Stage(job.stage), retry_count=job.retry_count)


def correlation(job: JobRow | Dispatched | Moved) -> str:
    """Every event about a job carries its request id, so one request reads as one story."""
    return str(job.request_id) if job.request_id is not None else f"job-{job.id}"


class Dispatcher:
    def __init__(self, settings: JobsSettings) -> None:
        self._settings = settings

    async def dispatch_user(self, repository: JobsRepository, uow: Emitter, user_id: int) -> int:
        """Fill the user's free slots with their oldest ready jobs; the user's lock is held."""
        dispatched = await repository.dispatch(
            user_id,
            self._settings.max_active_jobs_per_user,
            self._settings.queue_timeout_s,
            self._settings.eta_sample_size,
        )
        for job in dispatched:
            self._announce(uow, job)
        return len(dispatched)

    def _announce(self, uow: Emitter, job: Dispatched) -> None:
        eta = eta_seconds(
            job.position,
            job.recent_durations_ms,
            job.busy_runners,
            self._settings.default_duration_s,
        )
        ETA_SECONDS.labels(job.workflow_type or "unknown").observe(eta)
        uow.emit(dispatch_event(job), correlation_id=correlation(job))
        uow.emit(
            JobQueued(
                job_id=job.id,
                user_id=job.user_id or 0,
                chat_id=job.chat_id or 0,
                position=job.position,
                eta_seconds=eta,
            ),
            correlation_id=correlation(job),
        )

    async def dispatch_ready(self, unit_of_work: Callable[[], UnitOfWork]) -> int:
        """One pass: serve the users with a free slot and a ready job, fewest in flight first."""
        cap = self._settings.max_active_jobs_per_user
        async with unit_of_work() as uow:
            repository = JobsRepository(uow)
            candidates = await repository.users_with_ready_jobs(cap, self._settings.dispatch_batch)
        dispatched = 0
        for user in fair_order(candidates, cap):
            async with each_alone("dispatching to user", user.user_id), unit_of_work() as uow:
                repository = JobsRepository(uow)
                if not await repository.try_lock_user(user.user_id):
                    continue  # a handler or another replica is serving this user right now
                dispatched += await self.dispatch_user(repository, uow, user.user_id)
                await uow.commit()
        return dispatched


class Sweeper:
    """Finds attempts past their deadline and hands them to `give_up`."""

    def __init__(
        self,
        settings: JobsSettings,
        give_up: Callable[[JobsRepository, UnitOfWork, JobRow], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._give_up = give_up

    async def sweep(self, unit_of_work: Callable[[], UnitOfWork]) -> int:
        async with unit_of_work() as uow:
            repository = JobsRepository(uow)
            overdue = await repository.overdue_jobs(self._settings.dispatch_batch)
        swept = 0
        for job_id, user_id in overdue:
            async with each_alone("sweeping job", job_id), unit_of_work() as uow:
                repository = JobsRepository(uow)
                await repository.lock_user(user_id)
                job = await repository.job(job_id)
                if job is None or facts(job).stage not in WITH_DEADLINE:
                    continue
                if job.deadline_at is None or job.deadline_at >= job.now:
                    continue  # it moved on since we looked
                await self._give_up(repository, uow, job)
                await uow.commit()
                swept += 1
        return swept


@asynccontextmanager
async def each_alone(what: str, key: int) -> AsyncIterator[None]:
    """One row's work in a pass: if it fails for a reason of its own (a row no code path
    expected), it is logged and the pass goes on with the other rows, which it would otherwise
    hold up at every pass; trouble that is no row's fault (the database or broker away) ends
    the pass, as before."""
    try:
        yield
    except Exception as error:
        if is_transient(error):
            raise
        log.exception("%s %s failed; the pass goes on with the others", what, key)


def dispatch_event(job: Dispatched) -> JobDispatched | JobDispatchedV1:
    """An album's job goes out in v2 (its list of images); every other job in v1, which
    runners of the release before v2 still read during an upgrade."""
    common = {
        "job_id": job.id,
        "attempt": job.retry_count + 1,
        "workflow_type": job.workflow_type or "",
        "prompt": job.prompt or "",
        "seed": job.seed,
    }
    if job.extra_image_paths:
        images = [path for path in (job.image_path, *job.extra_image_paths) if path]
        return JobDispatched(**common, image_keys=images)
    return JobDispatchedV1(**common, image_key=job.image_path)
