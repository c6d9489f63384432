"""The backend API's reads of jobs: a filtered page of every job, with the total; the
dashboard's counts by outcome and per preset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.rpc import (
    CountJobs,
    JobPage,
    JobRecord,
    JobStats,
    OutcomeCount,
    PresetStats,
    SearchJobs,
)
from jobs.models import Job, Preset
from messaging.runtime import ServiceRuntime

COUNT_CAP = 1_000
"""The total is counted exactly up to this many jobs past the page's start (a count over
millions of jobs per page view takes longer than the page should); past it, "at least"."""


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
            cap = request.offset + max(request.limit, COUNT_CAP)
            counted = await session.scalar(
                select(func.count()).select_from(query.limit(cap + 1).subquery())
            )
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
            total=min(int(counted or 0), cap),
            total_exact=int(counted or 0) <= cap,
        )


class JobCounts:
    """The dashboard's jobs: created within the last days, by outcome and per preset."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def count(self, request: CountJobs) -> JobStats:
        since = datetime.now(UTC) - timedelta(days=request.days)
        outcome = func.coalesce(Job.stage, cast(Job.status, String), "unknown")
        completed = outcome == "completed"
        failed = outcome == "failed"
        async with self._sessions() as session:
            outcomes = (
                await session.execute(
                    select(outcome, func.count())
                    .where(Job.created_at >= since)
                    .group_by(outcome)
                    .order_by(func.count().desc(), outcome)
                )
            ).all()
            presets = (
                await session.execute(
                    select(
                        Job.preset_id,
                        func.min(Preset.name),
                        func.count(),
                        func.count().filter(completed),
                        func.count().filter(failed),
                        func.coalesce(func.sum(Job.price).filter(completed), 0),
                    )
                    .select_from(Job)
                    .outerjoin(Preset, Preset.id == Job.preset_id)
                    .where(Job.created_at >= since)
                    .group_by(Job.preset_id)
                    .order_by(func.count().desc(), Job.preset_id)
                )
            ).all()
        return JobStats(
            outcomes=[OutcomeCount(status=status, jobs=int(jobs)) for status, jobs in outcomes],
            presets=[
                PresetStats(
                    preset_id=preset_id,
                    name=name,
                    jobs=int(jobs),
                    completed=int(done),
                    failed=int(lost),
                    success_rate=done / (done + lost) if done + lost else None,
                    revenue=int(revenue or 0),
                )
                for preset_id, name, jobs, done, lost, revenue in presets
            ],
        )


def register(runtime: ServiceRuntime) -> None:
    runtime.serve(CountJobs, JobCounts(runtime.sessions).count)
    runtime.serve(SearchJobs, OperatorJobReads(runtime.sessions).search)
