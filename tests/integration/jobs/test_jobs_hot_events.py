"""The events every job brings (JobRequested, BalanceDebited, JobStarted) on their one path:
exactly-once effects, the causing event on each transition, the per-user cap under concurrency,
prices as the catalog says at the moment of the request, and a start in one statement."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import new_envelope
from contracts.events import (
    BalanceDebited,
    JobCreated,
    JobDispatchedV1,
    JobQueued,
    JobRejectReason,
    JobRejectReasonV1,
    JobRequested,
    JobRequestedV1,
    JobRequestRejected,
    JobRequestRejectedV1,
    JobStarted,
)
from contracts.topology import Topology
from support.jobs_harness import EDIT_IMAGE, EventLog, JobsPlayer
from support.messaging import eventually

Sessions = async_sessionmaker[AsyncSession]
StartJobs = Callable[..., AbstractAsyncContextManager[None]]
PRESET = 1


@pytest.fixture(autouse=True)
def preset(retouch_preset: int) -> None:
    """Every test here asks for jobs on the one edit preset (id 1)."""


def request(user_id: int, **fields: Any) -> JobRequested:
    return JobRequested(
        request_id=uuid.uuid4(),
        user_id=user_id,
        telegram_id=1000 + user_id,
        chat_id=1000 + user_id,
        **{"preset_id": PRESET, "image_keys": [EDIT_IMAGE], "price": 30, **fields},
    )


async def rows(sessions: Sessions, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with sessions() as session:
        return [tuple(row) for row in await session.execute(text(sql), params)]


async def inbox_holds(sessions: Sessions, *event_ids: uuid.UUID) -> bool:
    held = await rows(
        sessions, "SELECT event_id FROM jobs_inbox WHERE event_id = ANY(:ids)", ids=list(event_ids)
    )
    return len(held) == len(event_ids)


async def test_each_transition_names_its_event_and_the_inbox_holds_both(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    requested = await player.publish(request(3))
    (created,) = await events.wait_for(JobCreated, user_id=3)
    debited = await player.publish(
        BalanceDebited(job_id=created.job_id, user_id=3, amount=created.price, balance=70)
    )
    await player.dispatched(created.job_id)
    (queued,) = await events.wait_for(JobQueued, job_id=created.job_id)

    assert await inbox_holds(jobs_sessions, requested.id, debited.id)
    assert await rows(
        jobs_sessions,
        "SELECT from_stage, to_stage, attempt, event_id FROM job_transitions "
        "WHERE job_id = :job ORDER BY id",
        job=created.job_id,
    ) == [
        (None, "awaiting_payment", 1, requested.id),
        ("awaiting_payment", "waiting", 1, debited.id),
        ("waiting", "dispatched", 1, None),  # the dispatcher's own move
    ]
    ((stage, status, debited_at, deadline_at),) = await rows(
        jobs_sessions,
        "SELECT stage, status::text, debited_at, deadline_at - dispatched_at FROM jobs "
        "WHERE id = :job",
        job=created.job_id,
    )
    assert (stage, status, debited_at is not None) == ("dispatched", "queued", True)
    assert deadline_at.total_seconds() == 3600  # the queue timeout
    assert (queued.position, queued.user_id, queued.chat_id) == (1, 3, 1003)


async def test_a_redelivered_request_and_debit_change_nothing(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    requested = await player.publish(request(4))
    (created,) = await events.wait_for(JobCreated, user_id=4)
    debited = await player.publish(
        BalanceDebited(job_id=created.job_id, user_id=4, amount=created.price, balance=70)
    )
    await player.dispatched(created.job_id)
    settled = await rows(jobs_sessions, "SELECT * FROM job_transitions ORDER BY id")
    job = await rows(jobs_sessions, "SELECT * FROM jobs WHERE id = :job", job=created.job_id)

    for envelope in (requested, debited):  # the broker delivers them again, as they were
        await player.publisher.publish_envelope(envelope, envelope.type)
    await player.publish(request(4))  # a later request, handled after the repeats
    await events.wait_for(JobCreated, count=2, user_id=4)
    await asyncio.sleep(0.2)

    assert await rows(jobs_sessions, "SELECT * FROM jobs WHERE id = :job", job=created.job_id) == (
        job
    )
    assert (
        await rows(
            jobs_sessions,
            "SELECT * FROM job_transitions WHERE job_id = :job ORDER BY id",
            job=created.job_id,
        )
        == settled
    )
    assert len(events.of(JobCreated, request_id=created.request_id)) == 1
    assert len(events.of(JobDispatchedV1, job_id=created.job_id)) == 1


async def test_concurrent_requests_of_one_user_stop_at_the_unfinished_cap(
    start_jobs: StartJobs, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    async with start_jobs(max_unfinished_jobs_per_user=3):
        await asyncio.gather(*(player.publish(request(5)) for _ in range(12)))
        await eventually(lambda: _answered(events, 12))
    rejected = events.of(JobRequestRejected, user_id=5)
    assert len(events.of(JobCreated, user_id=5)) == 3
    assert len(rejected) == 9
    assert {event.reason for event in rejected} == {JobRejectReason.active_jobs_cap}
    assert await rows(jobs_sessions, "SELECT count(*) FROM jobs WHERE user_id = 5") == [(3,)]


async def _answered(events: EventLog, count: int) -> bool:
    return len(events.of(JobCreated)) + len(events.of(JobRequestRejected)) >= count


async def test_a_v1_request_is_priced_as_the_catalog_says_at_that_moment(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    """JobRequested v1 (a gateway before v2) names no price: the catalog's at arrival."""
    before = await player.submit(6, preset_id=PRESET, confirmed=False)
    async with jobs_sessions() as session, session.begin():
        await session.execute(
            text("UPDATE presets SET price = 45, prompt = 'Retouch gently' WHERE id = :id"),
            {"id": PRESET},
        )
    after = await player.submit_paid(6, preset_id=PRESET, confirmed=False)
    dispatched = await player.dispatched(after.job_id)
    async with jobs_sessions() as session, session.begin():
        await session.execute(text("UPDATE presets SET enabled = false WHERE id = :id"), {"id": 1})
    refused = await player.request(6, preset_id=PRESET, confirmed=False)
    (rejected,) = await events.wait_for(JobRequestRejected, request_id=refused)

    assert (before.price, after.price) == (30, 45)
    assert dispatched.prompt == "Retouch gently"
    assert rejected.reason is JobRejectReason.unknown_preset


async def test_an_unconfirmed_request_replayed_late_is_refused_uncharged(
    jobs: None, player: JobsPlayer, events: EventLog
) -> None:
    """A JobRequested v1 names no price: fresh, the catalog's is taken (a gateway before v2
    is still running); asked long ago (a dead letter replayed late), it is refused."""
    fresh = await player.request(9, preset_id=PRESET, confirmed=False)
    (created,) = await events.wait_for(JobCreated, request_id=fresh)
    late = {**request(9).model_dump(exclude={"price", "image_keys"}), "image_key": EDIT_IMAGE}
    envelope = new_envelope(JobRequestedV1(**late), source="bot_gateway")
    old = envelope.model_copy(update={"time": envelope.time - timedelta(hours=2)})
    await player.publisher.publish_envelope(old, old.type)
    (refused,) = await events.wait_for(JobRequestRejected, request_id=late["request_id"])

    assert created.price == 30
    assert refused.reason is JobRejectReason.invalid_request
    assert not events.of(JobCreated, request_id=late["request_id"])


async def test_a_request_is_refused_unless_the_price_is_the_one_the_user_confirmed(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    """The catalog changed between the confirmation and the tap: nothing is created (so
    nothing charged); the refusal says the price now, in v2, and in v1 as it can."""
    confirmed = await player.request(8, preset_id=PRESET, price=30)
    (created,) = await events.wait_for(JobCreated, request_id=confirmed)
    async with jobs_sessions() as session, session.begin():
        await session.execute(text("UPDATE presets SET price = 45 WHERE id = :id"), {"id": PRESET})
    stale = await player.request(8, preset_id=PRESET, price=30)
    (refused,) = await events.wait_for(JobRequestRejected, request_id=stale)
    (refused_v1,) = await events.wait_for(JobRequestRejectedV1, request_id=stale)
    repriced = await player.request(8, preset_id=PRESET, price=45)
    (created_again,) = await events.wait_for(JobCreated, request_id=repriced)

    assert created.price == 30
    assert (refused.reason, refused.price) == (JobRejectReason.price_changed, 45)
    assert refused_v1.reason is JobRejectReasonV1.invalid_request
    assert not events.of(JobCreated, request_id=stale)
    assert await rows(jobs_sessions, "SELECT price FROM jobs WHERE user_id = 8 ORDER BY id") == [
        (30,),
        (45,),
    ]
    assert created_again.price == 45


async def stage_of(sessions: Sessions, job_id: int) -> str:
    ((stage,),) = await rows(sessions, "SELECT stage FROM jobs WHERE id = :job", job=job_id)
    return str(stage)


async def test_a_start_moves_the_job_once_in_one_statement_naming_its_event(
    jobs: None, player: JobsPlayer, jobs_sessions: Sessions, topology: Topology
) -> None:
    created = await player.submit_paid(7, preset_id=PRESET)
    dispatched = await player.dispatched(created.job_id)
    start = JobStarted(
        job_id=created.job_id, attempt=dispatched.attempt, runner_id="r", total_steps=8
    )
    started = new_envelope(start, source="gpu_runner")
    naming: list[str] = []  # every statement, of any engine here, bound to the event's id

    def counted(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if started.id in (parameters if isinstance(parameters, tuple) else ()):
            naming.append(statement)

    sqlalchemy_events.listen(Engine, "before_cursor_execute", counted)
    try:
        await player.publisher.publish_envelope(started, start.routing_key())
        await eventually(lambda: _stage_is(jobs_sessions, created.job_id, "processing"))
    finally:
        sqlalchemy_events.remove(Engine, "before_cursor_execute", counted)
    moved = await rows(
        jobs_sessions,
        "SELECT from_stage, to_stage, attempt, event_id FROM job_transitions "
        "WHERE job_id = :job AND to_stage = 'processing'",
        job=created.job_id,
    )
    ((deadline,),) = await rows(
        jobs_sessions,
        "SELECT deadline_at - started_at FROM jobs WHERE id = :job",
        job=created.job_id,
    )
    queue = topology.service_queues["jobs"].name
    handled = starts_handled(queue)

    await player.publisher.publish_envelope(started, started.type)  # delivered again
    await player.start(created.job_id, attempt=2)  # an attempt never dispatched
    await eventually(lambda: _more_than(starts_handled(queue), handled + 1))

    assert len(naming) == 1  # the move, its transition and the inbox mark: one statement
    assert "jobs_inbox" in naming[0]
    assert "pg_advisory" not in naming[0]
    assert moved == [("dispatched", "processing", 1, started.id)]
    assert deadline.total_seconds() > 0  # the processing timeout runs from the start
    assert await inbox_holds(jobs_sessions, started.id)
    assert await rows(
        jobs_sessions,
        "SELECT count(*) FROM job_transitions WHERE job_id = :job AND to_stage = 'processing'",
        job=created.job_id,
    ) == [(1,)]


def starts_handled(queue: str) -> float:
    """JobStarted messages the jobs consumer settled, whatever the outcome but a retry."""
    return sum(
        REGISTRY.get_sample_value(
            "imagebot_messages_consumed_total",
            {"queue": queue, "event_type": "job.started", "outcome": outcome},
        )
        or 0.0
        for outcome in ("ok", "duplicate")
    )


async def test_a_start_whose_mark_is_taken_moves_nothing(
    jobs: None, player: JobsPlayer, jobs_sessions: Sessions, topology: Topology
) -> None:
    """The move and the inbox mark are one statement: a mark taken already (the event was
    handled, whatever the job looks like now) undoes the move with it."""
    created = await player.submit_paid(8, preset_id=PRESET)
    dispatched = await player.dispatched(created.job_id)
    started = JobStarted(
        job_id=created.job_id, attempt=dispatched.attempt, runner_id="r", total_steps=1
    )
    envelope = new_envelope(started, source="gpu_runner")
    async with jobs_sessions() as session, session.begin():
        await session.execute(
            text("INSERT INTO jobs_inbox (event_id, event_type) VALUES (:id, :type)"),
            {"id": envelope.id, "type": envelope.type},
        )
    queue = topology.service_queues["jobs"].name
    skipped = duplicates_skipped(queue)

    await player.publisher.publish_envelope(envelope, started.routing_key())
    await eventually(lambda: _more_than(duplicates_skipped(queue), skipped))

    assert await stage_of(jobs_sessions, created.job_id) == "dispatched"
    assert await rows(
        jobs_sessions,
        "SELECT count(*) FROM job_transitions WHERE job_id = :job AND to_stage = 'processing'",
        job=created.job_id,
    ) == [(0,)]


def duplicates_skipped(queue: str) -> float:
    labels = {"queue": queue, "event_type": "job.started", "outcome": "duplicate"}
    return REGISTRY.get_sample_value("imagebot_messages_consumed_total", labels) or 0.0


async def _more_than(value: float, than: float) -> bool:
    return value > than


async def _stage_is(sessions: Sessions, job_id: int, stage: str) -> bool:
    return await stage_of(sessions, job_id) == stage
