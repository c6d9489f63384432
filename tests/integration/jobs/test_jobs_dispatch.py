"""A user's dispatch is one statement: its selection, moves, transitions, positions and the
ETA's facts, checked here on the repository itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from jobs.models import DELIVERY
from jobs.repository import Dispatched, JobsRepository
from messaging.unit_of_work import UnitOfWork

Sessions = async_sessionmaker[AsyncSession]
EDIT, TEXT = "qwen_edit_2511", "qwen_image"


async def add_job(
    sessions: Sessions, user_id: int, stage: str, workflow: str = EDIT, **columns: Any
) -> int:
    fields = {
        "user_id": user_id,
        "stage": stage,
        "workflow_type": workflow,
        "prompt": "p",
        "retry_count": 0,
        **columns,
    }
    names = ", ".join(fields)
    values = ", ".join(f":{name}" for name in fields)
    async with sessions() as session, session.begin():
        job_id = await session.execute(
            text(f"INSERT INTO jobs ({names}) VALUES ({values}) RETURNING id"), fields
        )
        return int(job_id.scalar_one())


async def dispatch(sessions: Sessions, user_id: int, cap: int = 2) -> list[Dispatched]:
    engine = sessions.kw["bind"]
    async with UnitOfWork(engine, DELIVERY, source="test") as uow:
        repository = JobsRepository(uow)
        await repository.lock_user(user_id)
        dispatched = await repository.dispatch(user_id, cap, queue_timeout_s=60, eta_sample=3)
        await uow.commit()
    return dispatched


async def stages(sessions: Sessions, *job_ids: int) -> list[str]:
    async with sessions() as session:
        found = await session.execute(
            text("SELECT id, stage FROM jobs WHERE id = ANY(:ids)"), {"ids": list(job_ids)}
        )
        by_id = dict(found.all())
    return [by_id[job_id] for job_id in job_ids]


async def test_free_slots_take_the_oldest_ready_jobs_and_count_each_other_in_line(
    jobs_sessions: Sessions,
) -> None:
    await add_job(jobs_sessions, 2, "dispatched", dispatched_at=at(-1))  # ahead in line
    await add_job(jobs_sessions, 4, "dispatched", TEXT, dispatched_at=at(-1))  # another line
    await add_job(jobs_sessions, 3, "processing")  # a busy runner
    for duration_ms in (1000, 3000):
        await add_job(jobs_sessions, 3, "completed", duration_ms=duration_ms, finished_at=at())
    first, second, third = [await add_job(jobs_sessions, 1, "waiting") for _ in range(3)]

    dispatched = await dispatch(jobs_sessions, 1, cap=2)

    assert [job.id for job in dispatched] == [first, second]
    assert [job.position for job in dispatched] == [2, 3]  # behind `ahead`, and each other
    assert {job.busy_runners for job in dispatched} == {1}
    assert sorted(dispatched[0].recent_durations_ms) == [1000, 3000]
    assert await stages(jobs_sessions, first, second, third) == [
        "dispatched", "dispatched", "waiting",
    ]  # fmt: skip
    async with jobs_sessions() as session:
        recorded = await session.execute(
            text(
                "SELECT job_id, from_stage, to_stage, attempt, reason, event_id "
                "FROM job_transitions ORDER BY id"
            )
        )
        assert [tuple(row) for row in recorded] == [
            (first, "waiting", "dispatched", 1, "dispatched", None),
            (second, "waiting", "dispatched", 1, "dispatched", None),
        ]


async def test_jobs_in_flight_and_retry_backoffs_hold_jobs_back(jobs_sessions: Sessions) -> None:
    await add_job(jobs_sessions, 5, "processing")
    backing_off = await add_job(jobs_sessions, 5, "waiting", retry_count=1, next_attempt_at=at(60))
    due = await add_job(jobs_sessions, 5, "waiting", retry_count=2, next_attempt_at=at(-1))
    also_ready = await add_job(jobs_sessions, 5, "waiting")

    (dispatched,) = await dispatch(jobs_sessions, 5, cap=2)

    assert (dispatched.id, dispatched.retry_count) == (due, 2)
    assert await stages(jobs_sessions, backing_off, due, also_ready) == [
        "waiting", "dispatched", "waiting",
    ]  # fmt: skip
    assert await dispatch(jobs_sessions, 5, cap=2) == []  # the cap is reached


def at(seconds: float = 0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
