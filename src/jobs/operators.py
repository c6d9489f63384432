"""The backend API's read of jobs: a filtered page of every job, with the total."""

from __future__ import annotations

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.rpc import JobPage, JobRecord, SearchJobs
from jobs.models import Job
from messaging.runtime import ServiceRuntime


class OperatorJobReads:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def search(self, request: SearchJobs) -> JobPage:
        query = select(Job)
        if request.user_id is not None:
            query = query.where(Job.user_id == request.user_id)
        if request.status is not None:
            # `stage` is the lifecycle's; jobs of an adopted database have only the seed's status
            query = query.where(
                or_(
                    Job.stage == request.status,
                    Job.stage.is_(None) & (cast(Job.status, String) == request.status),
                )
            )
        if request.preset_id is not None:
            query = query.where(Job.preset_id == request.preset_id)
        if request.created_from is not None:
            query = query.where(Job.created_at >= request.created_from)
        if request.created_until is not None:
            query = query.where(Job.created_at < request.created_until)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            jobs = (
                await session.scalars(
                    query.order_by(Job.id.desc()).offset(request.offset).limit(request.limit)
                )
            ).all()
        return JobPage(
            jobs=[
                JobRecord(
                    job_id=job.id,
                    user_id=job.user_id,
                    status=job.stage or (job.status.value if job.status else "unknown"),
                    prompt=job.prompt,
                    preset_id=job.preset_id,
                    workflow_type=job.workflow_type,
                    price=job.price,
                    error=job.error,
                    created_at=job.created_at,
                    finished_at=job.finished_at,
                )
                for job in jobs
            ],
            total=int(total or 0),
        )


def register(runtime: ServiceRuntime) -> None:
    runtime.serve(SearchJobs, OperatorJobReads(runtime.sessions).search)
