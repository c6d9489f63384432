"""The jobs gauges count the real jobs table by stage, and the unfinished jobs by workflow."""

from __future__ import annotations

from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobs.metrics import observe_jobs
from support.jobs_harness import JobsPlayer
from support.messaging import eventually

Sessions = async_sessionmaker[AsyncSession]


def jobs_in(stage: str, status: str) -> float | None:
    return REGISTRY.get_sample_value("imagebot_jobs", {"stage": stage, "status": status})


def workflow_jobs(workflow: str, stage: str) -> float | None:
    return REGISTRY.get_sample_value(
        "imagebot_workflow_jobs", {"workflow": workflow, "stage": stage}
    )


async def test_the_gauge_counts_jobs_per_stage_and_reports_empty_stages_as_zero(
    jobs: None, player: JobsPlayer, jobs_sessions: Sessions, retouch_preset: int
) -> None:
    unpaid = [await player.submit(user, preset_id=1) for user in (1, 2)]
    paid = await player.submit_paid(3, preset_id=1)
    await player.dispatched(paid.job_id)
    await player.start(paid.job_id)

    async def processing() -> bool:
        await observe_jobs(jobs_sessions)
        return jobs_in("processing", "processing") == 1

    await eventually(processing)
    assert jobs_in("awaiting_payment", "queued") == len(unpaid)
    assert jobs_in("completed", "completed") == 0
    assert jobs_in("canceled", "failed") == 0
    assert workflow_jobs("qwen_edit_2511", "awaiting_payment") == len(unpaid)
    assert workflow_jobs("qwen_edit_2511", "processing") == 1
    assert workflow_jobs("qwen_image", "waiting") == 0  # every workflow and stage, 0 included
    assert workflow_jobs("qwen_edit_2511", "completed") is None  # finished jobs are not queued
