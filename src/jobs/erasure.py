"""A user's erasure (/deletemydata): their jobs keep their price, stage and times (the
accounting of what was charged and refunded), lose their prompts and image and result keys.

A job not finished yet could not run without them (and the gateway deletes the photos): it is
canceled first, as its user's cancel does (billing refunds what it debited, a runner stops it),
never left waiting with nothing to dispatch."""

from __future__ import annotations

from sqlalchemy import ColumnElement, case, or_, select, update

from contracts.events import UserDataErasureRequested
from jobs.domain import IN_FLIGHT, UNFINISHED
from jobs.lifecycle import JobLifecycle
from jobs.models import Job
from jobs.repository import JobsRepository
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork


class Erasure:
    def __init__(self, lifecycle: JobLifecycle) -> None:
        self._lifecycle = lifecycle

    async def erase(self, event: UserDataErasureRequested, uow: UnitOfWork) -> None:
        """Idempotent: erasing twice erases (and cancels) nothing more."""
        owned = _owned(event)
        jobs = JobsRepository(uow)
        owners = await uow.execute(
            select(Job.user_id).where(owned, Job.user_id.is_not(None)).distinct()
        )
        for owner in sorted(owners.scalars()):  # the owners' locks first, in one order
            await jobs.lock_user(owner)
        unfinished = await uow.execute(
            select(Job.id)
            .where(owned, Job.user_id.is_not(None), Job.stage.in_([s.value for s in UNFINISHED]))
            # jobs in flight last: cancelling one frees a slot, which nothing waits for by then
            .order_by(case((Job.stage.in_([s.value for s in IN_FLIGHT]), 1), else_=0), Job.id)
        )
        for job_id in unfinished.scalars().all():
            job = await jobs.job(job_id)  # read again, locked: the one before may have moved it
            if job is not None:
                await self._lifecycle.cancel_job(
                    jobs, uow, job, error="canceled: its user erased their data", reason="erased"
                )
        await uow.execute(
            update(Job)
            .where(owned)
            .values(prompt=None, image_path=None, extra_image_paths=None, result_path=None)
        )
        await uow.commit()


def _owned(event: UserDataErasureRequested) -> ColumnElement[bool]:
    owned = Job.telegram_id == event.telegram_id
    if event.user_id is not None:
        owned = or_(owned, Job.user_id == event.user_id)
    return owned


def register(runtime: ServiceRuntime, lifecycle: JobLifecycle) -> None:
    runtime.consumer.on(UserDataErasureRequested)(Erasure(lifecycle).erase)
