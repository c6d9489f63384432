"""The GPU runners as the operators see them: the backend API's own projection of their
heartbeats (`RunnerHeartbeat` → `backend_runners`, one row per runner, its latest beat).

A projection, not a request to each runner: runners have no database and come and go, a
request would need a queue per runner and only reach the living; the beats also say which
runners stopped answering. A runner is `gone` once `MISSED_BEATS` beats are overdue (or it
said it was stopping); a row of a runner gone for `FORGET_AFTER` is deleted as beats come in.
"""

from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from pydantic import BaseModel
from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend_api.models import RunnerBeat
from contracts.events import RunnerHeartbeat
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

RUNNERS = cast("Table", RunnerBeat.__table__)
MISSED_BEATS = 3
FORGET_AFTER = timedelta(days=7)
RunnerState = Literal["up", "unhealthy", "stopping", "gone"]


class RunnerView(BaseModel):
    runner_id: str
    state: RunnerState
    """`up`; `unhealthy` (its device cannot run jobs: `problem`); `stopping`; `gone` (its beats
    stopped: the rest is what it last said)."""
    workflows: list[str]
    device: str
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    current_job: int | None
    problem: str | None
    started_at: datetime
    last_beat_at: datetime


def state_of(row: RunnerBeat, now: datetime) -> RunnerState:
    if now - row.beat_at > timedelta(seconds=row.interval_s * MISSED_BEATS):
        return "gone"
    if row.stopping:
        return "stopping"
    return "up" if row.healthy else "unhealthy"


async def beat(event: RunnerHeartbeat, uow: UnitOfWork) -> None:
    """Keep the runner's latest beat (a late, older one changes nothing)."""
    assert uow.cause is not None
    values = {
        "runner_id": event.runner_id,
        "workflows": list(event.workflows),
        "device": event.device,
        "memory_used_bytes": event.memory_used_bytes,
        "memory_total_bytes": event.memory_total_bytes,
        "current_job": event.current_job,
        "healthy": event.healthy,
        "problem": event.problem,
        "stopping": event.stopping,
        "interval_s": event.interval_s,
        "started_at": event.started_at,
        "beat_at": uow.cause.time,
    }
    upsert = insert(RUNNERS).values(**values)
    await uow.execute(
        upsert.on_conflict_do_update(
            index_elements=[RUNNERS.c.runner_id],
            set_={key: upsert.excluded[key] for key in values if key != "runner_id"},
            where=RUNNERS.c.beat_at < upsert.excluded.beat_at,
        )
    )
    await uow.execute(delete(RUNNERS).where(RUNNERS.c.beat_at < func.now() - FORGET_AFTER))


class Runners:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def page(self, offset: int, limit: int) -> tuple[list[RunnerView], int]:
        """Runners by id, each with its state now."""
        now = datetime.now(UTC)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(RunnerBeat))
            rows = (
                await session.scalars(
                    select(RunnerBeat).order_by(RunnerBeat.runner_id).offset(offset).limit(limit)
                )
            ).all()
        return [view(row, now) for row in rows], int(total or 0)


def view(row: RunnerBeat, now: datetime) -> RunnerView:
    return RunnerView(
        runner_id=row.runner_id,
        state=state_of(row, now),
        workflows=list(row.workflows),
        device=row.device,
        memory_used_bytes=row.memory_used_bytes,
        memory_total_bytes=row.memory_total_bytes,
        current_job=row.current_job,
        problem=row.problem,
        started_at=row.started_at,
        last_beat_at=row.beat_at,
    )


def register(runtime: ServiceRuntime) -> Runners:
    runtime.consumer.on(RunnerHeartbeat)(beat)
    return Runners(runtime.sessions)
