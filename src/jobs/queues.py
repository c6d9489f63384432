"""Each workflow's queue, for operators: its depth and ETA (`jobs.queue_stats`), and pausing
and resuming it (commands from the backend API).

A paused workflow's paid jobs stay `waiting` in jobs (the dispatcher skips them: see
`repository.NOT_PAUSED`), are not failed and lose nothing; each of their users is told why once
(`JobHeld`: at the pause, or when a job is paid while it lasts). A resume removes the pause; the
dispatcher's next pass sends them on in its usual order (oldest first per user, fairly between
users), each with its `JobQueued`.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import Table, delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import (
    WORKFLOW_TYPES,
    JobHeld,
    WorkflowPaused,
    WorkflowPauseRequested,
    WorkflowResumed,
    WorkflowResumeRequested,
    WorkflowType,
)
from contracts.rpc import QueueStats, WorkflowQueues, WorkflowQueueView
from jobs.domain import Stage, eta_seconds
from jobs.models import Job, WorkflowPause
from jobs.settings import JobsSettings
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

PAUSES = cast("Table", WorkflowPause.__table__)
JOBS = cast("Table", Job.__table__)
HELD_NOTICE_BATCH = 10_000
"""At most this many users are told at one pause (the oldest jobs first); the rest of a longer
line learn it from the bot's status as usual."""


class QueueReads:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: JobsSettings):
        self._sessions = sessions
        self._settings = settings

    async def stats(self, _: QueueStats) -> WorkflowQueues:
        """Jobs waiting, dispatched and running per workflow, its mean recent duration and the
        ETA of a job queued now (behind all of those)."""
        stages = [Stage.waiting.value, Stage.dispatched.value, Stage.processing.value]
        async with self._sessions() as session:
            counts = (
                await session.execute(
                    select(Job.workflow_type, Job.stage, func.count())
                    .where(Job.stage.in_(stages))
                    .group_by(Job.workflow_type, Job.stage)
                )
            ).all()
            paused = set((await session.scalars(select(WorkflowPause.workflow_type))).all())
            durations = {
                workflow: list(
                    (
                        await session.scalars(
                            select(Job.duration_ms)
                            .where(Job.workflow_type == workflow, Job.duration_ms.is_not(None))
                            .order_by(Job.finished_at.desc())
                            .limit(self._settings.eta_sample_size)
                        )
                    ).all()
                )
                for workflow in WORKFLOW_TYPES
            }
        by_stage: dict[tuple[str | None, str | None], int] = {
            (workflow, stage): count for workflow, stage, count in counts
        }
        return WorkflowQueues(
            workflows=[
                self._view(workflow, by_stage, workflow in paused, durations[workflow])
                for workflow in WORKFLOW_TYPES
            ]
        )

    def _view(
        self,
        workflow: str,
        by_stage: dict[tuple[str | None, str | None], int],
        paused: bool,
        recent: list[int | None],
    ) -> WorkflowQueueView:
        waiting = by_stage.get((workflow, Stage.waiting.value), 0)
        dispatched = by_stage.get((workflow, Stage.dispatched.value), 0)
        running = by_stage.get((workflow, Stage.processing.value), 0)
        samples = [duration for duration in recent if duration is not None]
        return WorkflowQueueView(
            workflow_type=cast("WorkflowType", workflow),
            paused=paused,
            waiting=waiting,
            dispatched=dispatched,
            running=running,
            recent_durations=len(samples),
            mean_duration_s=sum(samples) / len(samples) / 1000 if samples else None,
            eta_seconds=eta_seconds(
                waiting + dispatched + 1, samples, running, self._settings.default_duration_s
            ),
        )


async def pause(event: WorkflowPauseRequested, uow: UnitOfWork) -> None:
    """Pause the workflow's queue once; tell each user with a job held by it."""
    added = await uow.execute(
        insert(PAUSES)
        .values(
            workflow_type=event.workflow_type,
            operator=event.operator,
            reason=event.reason,
            request_id=event.request_id,
        )
        .on_conflict_do_nothing(index_elements=[PAUSES.c.workflow_type])
        .returning(PAUSES.c.workflow_type)
    )
    already = added.first() is None
    held = await _waiting(uow, event.workflow_type)
    if not already:
        for row in await _oldest_waiting(uow, event.workflow_type):
            _tell(uow, row)
    log.info("workflow %s paused by %s (%d waiting)", event.workflow_type, event.operator, held)
    uow.emit(
        WorkflowPaused(
            request_id=event.request_id,
            operator=event.operator,
            workflow_type=event.workflow_type,
            already=already,
            waiting=held,
        ),
        correlation_id=str(event.request_id),
    )


async def resume(event: WorkflowResumeRequested, uow: UnitOfWork) -> None:
    """Resume the workflow's queue; the dispatcher's next pass sends its jobs on."""
    removed = await uow.execute(
        delete(PAUSES)
        .where(PAUSES.c.workflow_type == event.workflow_type)
        .returning(PAUSES.c.workflow_type)
    )
    held = await _waiting(uow, event.workflow_type)
    log.info("workflow %s resumed by %s (%d waiting)", event.workflow_type, event.operator, held)
    uow.emit(
        WorkflowResumed(
            request_id=event.request_id,
            operator=event.operator,
            workflow_type=event.workflow_type,
            already=removed.first() is None,
            waiting=held,
        ),
        correlation_id=str(event.request_id),
    )


async def tell_if_held(uow: UnitOfWork, job_id: int) -> None:
    """A job just paid: if its workflow is paused and it still waits, its user is told why."""
    row = (
        await uow.execute(
            select(*HELD_COLUMNS).where(
                JOBS.c.id == job_id,
                JOBS.c.stage == Stage.waiting.value,
                exists().where(PAUSES.c.workflow_type == JOBS.c.workflow_type),
            )
        )
    ).first()
    if row is not None:
        _tell(uow, row)


HELD_COLUMNS = (JOBS.c.id, JOBS.c.user_id, JOBS.c.chat_id, JOBS.c.workflow_type, JOBS.c.request_id)


async def _waiting(uow: UnitOfWork, workflow: str) -> int:
    waiting = JOBS.c.workflow_type == workflow, JOBS.c.stage == Stage.waiting.value
    counted = await uow.execute(select(func.count()).where(*waiting))
    return int(counted.scalar_one())


async def _oldest_waiting(uow: UnitOfWork, workflow: str) -> list[Any]:
    return list(
        (
            await uow.execute(
                select(*HELD_COLUMNS)
                .where(JOBS.c.workflow_type == workflow, JOBS.c.stage == Stage.waiting.value)
                .order_by(JOBS.c.created_at, JOBS.c.id)
                .limit(HELD_NOTICE_BATCH)
            )
        ).all()
    )


def _tell(uow: UnitOfWork, row: Any) -> None:
    if row.user_id is None or row.chat_id is None:
        return  # a job of an adopted database that no chat is waiting on
    uow.emit(
        JobHeld(
            job_id=row.id,
            user_id=row.user_id,
            chat_id=row.chat_id,
            workflow_type=row.workflow_type,
            reason="workflow_paused",
        ),
        correlation_id=str(row.request_id) if row.request_id else f"job-{row.id}",
    )


def register(runtime: ServiceRuntime, settings: JobsSettings) -> None:
    # jobs fills the GPU queues, so it reports their DLQs (no other service declares them its own)
    runtime.observe_dlqs(*(spec.dlq for spec in runtime.topology.gpu_queues.values()))
    runtime.serve(QueueStats, QueueReads(runtime.sessions, settings).stats)
    runtime.consumer.on(WorkflowPauseRequested)(pause)
    runtime.consumer.on(WorkflowResumeRequested)(resume)
