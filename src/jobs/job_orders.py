"""Operators' orders about a job (through the backend API): cancel one, as its user's cancel does
(billing refunds what was debited, a runner stops it, the gateway tells the user), once per
request id (the inbox), answered by JobOrderApplied or JobOrderRefused."""

from __future__ import annotations

import logging

from contracts.events import (
    JobCancelOrdered,
    JobOrderApplied,
    JobOrderRefused,
    JobOrderRefusedReason,
)
from jobs.lifecycle import JobLifecycle
from jobs.repository import JobsRepository
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


class JobOrders:
    def __init__(self, lifecycle: JobLifecycle) -> None:
        self._lifecycle = lifecycle

    async def cancel(self, event: JobCancelOrdered, uow: UnitOfWork) -> None:
        jobs = JobsRepository(uow)
        job = None
        if await jobs.lock_owner(event.job_id) is not None:
            job = await jobs.job(event.job_id)
        if job is None:
            self._refuse(uow, event, JobOrderRefusedReason.unknown_job, None)
            return
        was_running = await self._lifecycle.cancel_job(
            jobs,
            uow,
            job,
            error=f"canceled by operator {event.operator}: {event.reason}"[:2000],
            reason="canceled_by_operator",
        )
        if was_running is None:
            self._refuse(uow, event, JobOrderRefusedReason.finished, job.stage)
            return
        log.info("operator %s canceled job %s: %s", event.operator, job.id, event.reason)
        uow.emit(
            JobOrderApplied(
                request_id=event.request_id,
                operator=event.operator,
                job_id=job.id,
                was_running=was_running,
            ),
            correlation_id=str(event.request_id),
        )

    @staticmethod
    def _refuse(
        uow: UnitOfWork,
        event: JobCancelOrdered,
        reason: JobOrderRefusedReason,
        stage: str | None,
    ) -> None:
        log.info("operator %s's cancel of job %s refused: %s", event.operator, event.job_id, reason)
        uow.emit(
            JobOrderRefused(
                request_id=event.request_id,
                operator=event.operator,
                job_id=event.job_id,
                reason=reason,
                stage=stage,
            ),
            correlation_id=str(event.request_id),
        )


def register(runtime: ServiceRuntime, lifecycle: JobLifecycle) -> None:
    runtime.consumer.on(JobCancelOrdered)(JobOrders(lifecycle).cancel)
