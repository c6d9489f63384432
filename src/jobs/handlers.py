"""Wiring: each incoming event to its use case, each request/reply method to its read."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import (
    BalanceDebited,
    BalanceDebitedV1,
    DebitRejected,
    DebitRejectedV1,
    JobAttemptFailed,
    JobCancelRequested,
    JobCompleted,
    JobRequested,
    JobRequestedV1,
    JobRequestedV2,
    JobStarted,
)
from contracts.rpc import JobHistory, JobView, ListJobs, ListPresets, PresetCatalog
from jobs import catalog_edits, erasure, job_orders, operators, queues
from jobs.catalog import catalog_view
from jobs.lifecycle import JobLifecycle
from jobs.repository import CatalogRepository, JobsRepository
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork


def register_handlers(runtime: ServiceRuntime, lifecycle: JobLifecycle) -> None:
    on = runtime.consumer.on
    on(JobRequested)(lifecycle.request)
    on(JobRequestedV2)(lifecycle.request)  # from gateways before v3 (albums)
    on(JobRequestedV1)(lifecycle.request)  # from gateways before v2
    # Billing publishes v1 beside v2, and a billing of the release before publishes v1 alone
    # (jobs is upgraded first): whichever copy comes first moves the job, the other finds it
    # moved on and changes nothing.
    on(BalanceDebited)(lifecycle.paid)
    on(BalanceDebitedV1)(lifecycle.paid)
    on(DebitRejected)(lifecycle.debit_rejected)
    on(DebitRejectedV1)(lifecycle.debit_rejected)
    on(JobStarted)(lifecycle.started)
    on(JobCompleted)(lifecycle.completed)
    on(JobAttemptFailed)(lifecycle.attempt_failed)
    on(JobCancelRequested)(lifecycle.cancel)
    erasure.register(runtime, lifecycle)  # /deletemydata: unfinished jobs canceled, inputs go
    reads = Reads(runtime.sessions, runtime.unit_of_work, lifecycle.settings.custom_prompt_price)
    runtime.serve(ListPresets, reads.presets)
    runtime.serve(ListJobs, reads.jobs)
    operators.register(runtime)  # the backend API's read
    queues.register(runtime, lifecycle.settings)  # queue depth, ETA, pause and resume
    catalog_edits.register(runtime, lifecycle.settings.custom_prompt_price)  # operators' catalog
    job_orders.register(runtime, lifecycle)  # operators' cancel


class Reads:
    """The request/reply reads the gateway makes: the catalog and a user's history."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        unit_of_work: Callable[[], UnitOfWork],
        custom_prompt_price: int,
    ):
        self._sessions = sessions
        self._unit_of_work = unit_of_work
        self._custom_prompt_price = custom_prompt_price

    async def presets(self, _: ListPresets) -> PresetCatalog:
        async with self._sessions() as session:
            presets = await CatalogRepository(session).all_presets()
            return catalog_view(presets, self._custom_prompt_price)

    async def jobs(self, request: ListJobs) -> JobHistory:
        async with self._unit_of_work() as uow:
            jobs = await JobsRepository(uow).recent_jobs(request.user_id, request.limit)
        return JobHistory(
            jobs=[
                JobView(
                    job_id=job.id,
                    status=job.stage or job.status or "unknown",
                    prompt=job.prompt,
                    preset_id=job.preset_id,
                    price=job.price or 0,
                    result_key=job.result_path,
                    error=job.error,
                    created_at=job.created_at,
                    updated_at=job.updated_at,
                )
                for job in jobs
                if job.created_at is not None
            ]
        )
