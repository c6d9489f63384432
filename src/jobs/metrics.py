"""The jobs gauges: how many jobs are in each stage (and the seed's status beside it), the
unfinished ones per workflow; and the ETAs promised to dispatched jobs."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import WORKFLOW_TYPES
from jobs.domain import LEGACY_STATUS, UNFINISHED, Stage
from jobs.models import Job

JOBS = Gauge("imagebot_jobs", "Jobs by stage and the seed's status.", ["stage", "status"])
WORKFLOW_JOBS = Gauge(
    "imagebot_workflow_jobs", "Unfinished jobs by workflow and stage.", ["workflow", "stage"]
)
ETA_SECONDS = Histogram(
    "imagebot_jobs_eta_seconds",
    "The ETA told to each job as it was dispatched (JobQueued), by workflow.",
    ["workflow"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)


async def observe_jobs(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Count the jobs per stage, and the unfinished ones per workflow; 0s reported too."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Job.stage, Job.status, Job.workflow_type, func.count()).group_by(
                    Job.stage, Job.status, Job.workflow_type
                )
            )
        ).all()
    counts: dict[tuple[str, str], int] = {}
    unfinished: dict[tuple[str, str], int] = {}
    for stage, legacy, workflow, n in rows:
        stage_name = stage or "unknown"
        key = (stage_name, legacy.value if legacy else "unknown")
        counts[key] = counts.get(key, 0) + n
        if stage_name in UNFINISHED:
            by_workflow = (workflow or "unknown", stage_name)
            unfinished[by_workflow] = unfinished.get(by_workflow, 0) + n
    # Replaced in one step (no await in between), so a scrape never sees a half-filled gauge.
    JOBS.clear()
    for stage in Stage:
        JOBS.labels(stage.value, LEGACY_STATUS[stage]).set(0)
    for (stage_name, status), n in counts.items():
        JOBS.labels(stage_name, status).set(n)
    WORKFLOW_JOBS.clear()
    for workflow in WORKFLOW_TYPES:
        for stage in UNFINISHED:
            WORKFLOW_JOBS.labels(workflow, stage.value).set(0)
    for (workflow, stage_name), n in unfinished.items():
        WORKFLOW_JOBS.labels(workflow, stage_name).set(n)
