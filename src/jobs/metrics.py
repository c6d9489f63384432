"""The jobs gauge: how many jobs are in each stage (and the seed's status beside it)."""

from __future__ import annotations

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobs.domain import LEGACY_STATUS, Stage
from jobs.models import Job

JOBS = Gauge("imagebot_jobs", "Jobs by stage and the seed's status.", ["stage", "status"])


async def observe_jobs(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Count the jobs per stage; every stage is reported, 0 included."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Job.stage, Job.status, func.count()).group_by(Job.stage, Job.status)
            )
        ).all()
    counts = {
        (stage or "unknown", status.value if status else "unknown"): n for stage, status, n in rows
    }
    # Replaced in one step (no await in between), so a scrape never sees a half-filled gauge.
    JOBS.clear()
    for stage in Stage:
        JOBS.labels(stage.value, LEGACY_STATUS[stage]).set(0)
    for (stage_name, status), n in counts.items():
        JOBS.labels(stage_name, status).set(n)
