"""A user's erasure (/deletemydata) with jobs of theirs not finished: none is stranded."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import JobCanceled, UserDataErasureRequested
from support.jobs_harness import EventLog, JobsPlayer
from support.messaging import eventually

Sessions = async_sessionmaker[AsyncSession]
StartJobs = Callable[..., AbstractAsyncContextManager[None]]
EDIT_PRESET = 1


@pytest.fixture(autouse=True)
def preset(retouch_preset: int) -> None:
    """Every test here asks for jobs on the one edit preset (id 1)."""


async def stages_are(sessions: Sessions, job_ids: tuple[int, ...], expected: list[str]) -> bool:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT stage FROM jobs WHERE id = ANY(:ids) ORDER BY id"), {"ids": list(job_ids)}
        )
        return [row.stage for row in rows] == expected


async def handled(sessions: Sessions, event_id: uuid.UUID) -> bool:
    async with sessions() as session:
        found = await session.execute(
            text("SELECT 1 FROM jobs_inbox WHERE event_id = :id"), {"id": event_id}
        )
        return found.first() is not None


async def test_an_erasure_cancels_the_users_unfinished_jobs_which_could_no_longer_run(
    start_jobs: StartJobs, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    """The erasure drops the prompts and images a job still waiting would be dispatched with
    (and the gateway deletes the photos): such a job could never run. Left waiting, its
    dispatch failed (no prompt), and so did everything that dispatches for its user (a
    completion, a cancel, a timeout): its user's jobs were stuck for good, never refunded."""
    async with start_jobs(max_active_jobs_per_user=1):
        running = await player.submit_paid(9, preset_id=EDIT_PRESET)
        await player.dispatched(running.job_id)
        await player.start(running.job_id)
        waiting = await player.submit_paid(9, preset_id=EDIT_PRESET)
        unpaid = await player.submit(9, preset_id=EDIT_PRESET)
        jobs = (running.job_id, waiting.job_id, unpaid.job_id)
        await eventually(
            lambda: stages_are(jobs_sessions, jobs, ["processing", "waiting", "awaiting_payment"])
        )

        await player.publish(
            UserDataErasureRequested(request_id=uuid.uuid4(), telegram_id=1009, user_id=9)
        )
        await eventually(lambda: stages_are(jobs_sessions, jobs, ["canceled"] * 3), timeout_s=10)
        # the runner had it already: its result, handled after the erasure, changes nothing
        # (published before it, the two could be handled in either order)
        completion = await player.complete(running.job_id)
        await eventually(lambda: handled(jobs_sessions, completion.id))
        assert await stages_are(jobs_sessions, jobs, ["canceled"] * 3)
        other = await player.submit_paid(10, preset_id=EDIT_PRESET)  # the dispatcher goes on
        await player.dispatched(other.job_id)
        canceled = await events.wait_for(JobCanceled, count=3, user_id=9)

    assert {(event.job_id, event.was_running) for event in canceled} == {
        (running.job_id, True),
        (waiting.job_id, False),
        (unpaid.job_id, False),
    }  # billing refunds what it debited; a runner stops the running one
    async with jobs_sessions() as session:
        kept = await session.execute(
            text("SELECT count(*) FROM jobs WHERE user_id = 9 AND (prompt IS NOT NULL "
                 "OR image_path IS NOT NULL OR result_path IS NOT NULL)")
        )  # fmt: skip
        assert kept.scalar_one() == 0
