"""Operators' orders about a job (through the backend API), each once per request id (the
inbox): cancel one, as its user's cancel does (billing refunds what was debited, a runner stops
it, the gateway tells the user), answered by JobOrderApplied; or retry a failed one, as a new
job of its inputs at no charge (JobCreated with price 0: billing debits nothing; the failed job
stays failed, its refund stands), answered by JobRetried, which the gateway follows it by.
Either is refused by JobOrderRefused."""

from __future__ import annotations

import logging

from contracts.events import (
    JobCancelOrdered,
    JobOrderApplied,
    JobOrderRefused,
    JobOrderRefusedReason,
    JobRetried,
    JobRetryOrdered,
)
from jobs import domain
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

    async def retry(self, event: JobRetryOrdered, uow: UnitOfWork) -> None:
        """A new job of the failed one's inputs for its user, at no charge, under the
        operator's request id; created as a request's job is (JobCreated, billing's debit)."""
        jobs = JobsRepository(uow)
        failed = None
        if await jobs.lock_owner(event.job_id) is not None:
            failed = await jobs.inputs(event.job_id)
        if failed is None:
            self._refuse(uow, event, JobOrderRefusedReason.unknown_job, None)
            return
        rerun = domain.retry(failed, event.request_id)
        if not isinstance(rerun, domain.Rerun):
            self._refuse(uow, event, rerun, failed.stage)
            return
        state = await jobs.request_state(event.request_id, rerun.user_id, None)
        if state.existing_job is not None:
            log.info(
                "retry %s made job %s already; nothing more", event.request_id, state.existing_job
            )
            return
        job = self._lifecycle.new_job(rerun, rerun.order, state)
        log.info(
            "operator %s retried job %s as job %s: %s",
            event.operator,
            event.job_id,
            job.id,
            event.reason,
        )
        uow.emit(
            JobRetried(
                request_id=event.request_id,
                operator=event.operator,
                retried_job_id=event.job_id,
                job_id=job.id,
                user_id=job.user_id,
                telegram_id=job.telegram_id,
                preset_id=job.preset_id,
                language=job.language,
            ),
            correlation_id=str(event.request_id),
        )  # before JobCreated: the gateway follows the job from it, and JobCreated links it
        if await self._lifecycle.create(uow, job) is None:
            raise RuntimeError(f"retry {event.request_id} raced past the user lock")

    @staticmethod
    def _refuse(
        uow: UnitOfWork,
        event: JobCancelOrdered | JobRetryOrdered,
        reason: JobOrderRefusedReason,
        stage: str | None,
    ) -> None:
        log.info(
            "operator %s's %s of job %s refused: %s",
            event.operator,
            event.event_type,
            event.job_id,
            reason,
        )
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
    orders = JobOrders(lifecycle)
    runtime.consumer.on(JobCancelOrdered)(orders.cancel)
    runtime.consumer.on(JobRetryOrdered)(orders.retry)
