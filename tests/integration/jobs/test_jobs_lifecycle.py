"""The job lifecycle through the real jobs service, broker and database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import (
    DebitRejected,
    DebitRejectReason,
    JobAttemptFailed,
    JobCanceled,
    JobCreated,
    JobDispatched,
    JobDispatchedV1,
    JobFailed,
    JobQueued,
    JobRejectReason,
    JobRequestRejected,
    JobSucceeded,
)
from support.jobs_harness import EventLog, JobsPlayer
from support.messaging import eventually

Sessions = async_sessionmaker[AsyncSession]
StartJobs = Callable[..., AbstractAsyncContextManager[None]]
EDIT_PRESET, DISABLED_PRESET, TEXT_PRESET = 1, 2, 3


@pytest.fixture(autouse=True)
async def presets(jobs_sessions: Sessions, clean_jobs_database: None) -> None:
    async with jobs_sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO presets (category, name, prompt, icon, price, order_index, "
                "workflow_type, enabled) VALUES "
                "('фото', 'Ретушь', 'Retouch the portrait', '✨', 30, 1, 'qwen_edit_2511', true),"
                "('фото', 'Старый', 'Old look', '📷', 20, 2, 'qwen_edit_2511', false),"
                "('иллюстрация', 'Открытка', 'A postcard', '💌', 40, 1, 'qwen_image', true)"
            )
        )


async def history(sessions: Sessions, job_id: int) -> list[tuple[Any, ...]]:
    """(from, to, attempt, reason) of every stored transition of the job, in order."""
    async with sessions() as session:
        rows = await session.execute(
            text(
                "SELECT from_stage, to_stage, attempt, reason FROM job_transitions "
                "WHERE job_id = :job ORDER BY id"
            ),
            {"job": job_id},
        )
        return [tuple(row) for row in rows]


async def job_row(sessions: Sessions, job_id: int) -> dict[str, Any]:
    async with sessions() as session:
        row = await session.execute(
            text("SELECT *, status::text AS legacy FROM jobs WHERE id = :job"), {"job": job_id}
        )
        return dict(row.mappings().one())


async def stage_is(sessions: Sessions, job_id: int, stage: str) -> bool:
    return (await job_row(sessions, job_id))["stage"] == stage


async def test_an_album_is_one_job_on_its_images_in_order_dispatched_in_v2(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    """Up to three images (an album) make one job: the customer's image_path keeps the first,
    extra_image_paths the rest, and the dispatch (v2, as v1 carries one image) names them all,
    in the order sent; after a retry too."""
    album = ["uploads/person.jpg", "uploads/product.jpg", "uploads/style.jpg"]
    created = await player.submit_paid(4, preset_id=EDIT_PRESET, image_keys=album)
    (dispatched,) = await events.wait_for(JobDispatched, job_id=created.job_id)
    assert dispatched.image_keys == album
    assert events.of(JobDispatchedV1, job_id=created.job_id) == []
    row = await job_row(jobs_sessions, created.job_id)
    assert (row["image_path"], row["extra_image_paths"]) == (album[0], album[1:])

    await player.start(created.job_id)
    await player.publish(
        JobAttemptFailed(job_id=created.job_id, attempt=1, retryable=True, reason="gpu_oom")
    )
    (again,) = await events.wait_for(JobDispatched, job_id=created.job_id, attempt=2)
    assert again.image_keys == album


async def test_a_job_runs_from_request_to_result_with_every_transition_stored(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    created = await player.submit(3, preset_id=EDIT_PRESET)
    assert (created.price, created.workflow_type, created.preset_id) == (30, "qwen_edit_2511", 1)
    await player.pay(created)

    dispatched = await player.dispatched(created.job_id)
    assert dispatched.prompt == "Retouch the portrait"
    assert dispatched.image_key == "uploads/photo.jpg"
    assert dispatched.seed is not None
    (queued,) = await events.wait_for(JobQueued, job_id=created.job_id)
    assert (queued.position, queued.eta_seconds, queued.chat_id) == (1, 60, 1003)

    await player.start(created.job_id)
    await eventually(lambda: stage_is(jobs_sessions, created.job_id, "processing"))
    await player.complete(created.job_id)
    (succeeded,) = await events.wait_for(JobSucceeded, job_id=created.job_id)
    assert await stage_is(jobs_sessions, created.job_id, "completed")  # the same commit
    assert (succeeded.user_id, succeeded.chat_id, succeeded.attempt) == (3, 1003, 1)
    assert (succeeded.result_key, succeeded.duration_ms) == (
        f"results/{created.job_id}-1.png", 1500,
    )  # fmt: skip

    row = await job_row(jobs_sessions, created.job_id)
    assert (row["legacy"], row["result_path"], row["retry_count"], row["price"]) == (
        "completed", f"results/{created.job_id}-1.png", 0, 30,
    )  # fmt: skip
    assert row["duration_ms"] == 1500
    assert await history(jobs_sessions, created.job_id) == [
        (None, "awaiting_payment", 1, "requested"),
        ("awaiting_payment", "waiting", 1, "paid"),
        ("waiting", "dispatched", 1, "dispatched"),
        ("dispatched", "processing", 1, "started"),
        ("processing", "completed", 1, "completed"),
    ]


async def test_retryable_failures_retry_up_to_the_limit_then_the_job_fails(
    start_jobs: StartJobs, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    async with start_jobs(max_attempts=3):
        created = await player.submit_paid(4, prompt="paint it blue")
        for attempt in (1, 2, 3):
            dispatched = await player.dispatched(created.job_id, attempt)
            assert dispatched.prompt == "paint it blue"
            await player.start(created.job_id, attempt)
            await eventually(lambda: stage_is(jobs_sessions, created.job_id, "processing"))
            await player.fail(created.job_id, attempt)
        (failed,) = await events.wait_for(JobFailed, job_id=created.job_id)

    assert (failed.user_id, failed.chat_id, failed.reason) == (4, 1004, "out_of_memory")
    assert "attempt 3 of 3" in failed.detail
    row = await job_row(jobs_sessions, created.job_id)
    assert (row["stage"], row["legacy"], row["retry_count"]) == ("failed", "failed", 2)
    assert len(events.of(JobDispatchedV1, job_id=created.job_id)) == 3
    seeds = {dispatched.seed for dispatched in events.of(JobDispatchedV1, job_id=created.job_id)}
    assert len(seeds) == 1  # every attempt renders the same picture
    assert await history(jobs_sessions, created.job_id) == [
        (None, "awaiting_payment", 1, "requested"),
        ("awaiting_payment", "waiting", 1, "paid"),
        ("waiting", "dispatched", 1, "dispatched"),
        ("dispatched", "processing", 1, "started"),
        ("processing", "waiting", 1, "out_of_memory"),
        ("waiting", "dispatched", 2, "dispatched"),
        ("dispatched", "processing", 2, "started"),
        ("processing", "waiting", 2, "out_of_memory"),
        ("waiting", "dispatched", 3, "dispatched"),
        ("dispatched", "processing", 3, "started"),
        ("processing", "failed", 3, "out_of_memory"),
    ]


async def test_a_permanent_failure_fails_the_job_without_a_retry(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    created = await player.submit_paid(5, preset_id=EDIT_PRESET)
    await player.dispatched(created.job_id)
    await player.fail(created.job_id, 1, retryable=False)
    (failed,) = await events.wait_for(JobFailed, job_id=created.job_id)
    assert failed.reason == "unreadable_image"
    assert len(events.of(JobDispatchedV1, job_id=created.job_id)) == 1


async def test_a_stuck_processing_job_is_retried_then_failed_by_its_timeout(
    start_jobs: StartJobs, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    async with start_jobs(max_attempts=2, processing_timeout_s=0.5):
        created = await player.submit_paid(6, preset_id=EDIT_PRESET)
        await player.dispatched(created.job_id, 1)
        await player.start(created.job_id, 1)  # ... and the runner goes silent
        await player.dispatched(created.job_id, 2)
        await player.start(created.job_id, 2)  # silent again: no attempts left
        (failed,) = await events.wait_for(JobFailed, job_id=created.job_id)

    assert failed.reason == "timeout"
    assert [
        step for step in await history(jobs_sessions, created.job_id) if step[3] == "timeout"
    ] == [("processing", "waiting", 1, "timeout"), ("processing", "failed", 2, "timeout")]


async def test_a_job_billing_never_answers_fails_instead_of_waiting_forever(
    start_jobs: StartJobs, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    async with start_jobs(payment_timeout_s=0.3, sweep_interval_s=0.1):
        created = await player.submit(6, preset_id=EDIT_PRESET)  # no BalanceDebited ever comes
        (failed,) = await events.wait_for(JobFailed, job_id=created.job_id)
    assert failed.reason == "payment_timeout"  # billing refunds on it, if it did debit
    assert await stage_is(jobs_sessions, created.job_id, "failed")


async def test_a_dispatched_job_no_runner_takes_is_handed_out_again(
    start_jobs: StartJobs, player: JobsPlayer, jobs_sessions: Sessions
) -> None:
    async with start_jobs(queue_timeout_s=0.3):
        created = await player.submit_paid(7, preset_id=EDIT_PRESET)
        await player.dispatched(created.job_id, 1)
        again = await player.dispatched(created.job_id, 2)
    assert again.attempt == 2


async def test_a_job_whose_dispatch_cannot_be_built_holds_up_no_other_job(
    start_jobs: StartJobs, player: JobsPlayer, jobs_sessions: Sessions
) -> None:
    """A row no code path expected (here a dispatched job whose prompt went missing, so its
    next dispatch cannot be built) fails alone, at each pass of the dispatcher and of the
    sweeper: the other user's job, which timed out after it, is still handed out again."""
    async with start_jobs(queue_timeout_s=0.5):
        broken = await player.submit_paid(9, preset_id=EDIT_PRESET)
        await player.dispatched(broken.job_id, 1)
        async with jobs_sessions() as session, session.begin():
            await session.execute(
                text("UPDATE jobs SET prompt = NULL WHERE id = :job"), {"job": broken.job_id}
            )
        other = await player.submit_paid(10, preset_id=EDIT_PRESET)
        await player.dispatched(other.job_id, 1)
        again = await player.dispatched(other.job_id, 2)
    assert again.attempt == 2
    # given up on, it waits for a dispatch that cannot be built (each try rolled back)
    assert await stage_is(jobs_sessions, broken.job_id, "waiting")


async def test_duplicate_and_out_of_order_events_change_nothing(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    created = await player.submit_paid(8, preset_id=EDIT_PRESET)
    await player.dispatched(created.job_id)
    await player.start(created.job_id)
    await eventually(lambda: stage_is(jobs_sessions, created.job_id, "processing"))
    completion = await player.complete(created.job_id)
    await eventually(lambda: stage_is(jobs_sessions, created.job_id, "completed"))
    settled = await history(jobs_sessions, created.job_id)
    row = await job_row(jobs_sessions, created.job_id)

    await player.publisher.publish_envelope(completion, "job.completed")  # redelivered as is
    await player.complete(created.job_id)  # JobCompleted again, a new event
    await player.complete(created.job_id, 2)  # from an attempt that never existed
    await player.start(created.job_id)  # JobStarted after JobCompleted
    await player.fail(created.job_id, 1)
    await player.cancel(created.job_id, 8)
    await player.pay(created)  # a second debit
    await player.publish(
        DebitRejected(job_id=created.job_id, user_id=8, reason=DebitRejectReason.insufficient_funds,
                      price=30, balance=0, shortfall=30)
    )  # fmt: skip
    await eventually(lambda: _inbox_holds(jobs_sessions, 11))
    await asyncio.sleep(0.3)  # the redelivered duplicate may be the last one handled

    assert await history(jobs_sessions, created.job_id) == settled
    assert await job_row(jobs_sessions, created.job_id) == row
    assert not events.of(JobCanceled)
    assert not events.of(JobFailed)
    assert len(events.of(JobDispatchedV1)) == 1
    assert await _succeeded_in_outbox(jobs_sessions, created.job_id) == 1  # the first result only
    assert len(events.of(JobSucceeded, job_id=created.job_id)) == 1


async def _handled(sessions: Sessions, event_id: uuid.UUID) -> bool:
    """Whether jobs claimed (and so committed whatever it decided about) the event."""
    async with sessions() as session:
        found = await session.execute(
            text("SELECT 1 FROM jobs_inbox WHERE event_id = :id"), {"id": event_id}
        )
    return found.first() is not None


async def _succeeded_in_outbox(sessions: Sessions, job_id: int) -> int:
    """JobSucceeded events of the job that jobs ever committed to its outbox, published or not."""
    async with sessions() as session:
        count = await session.execute(
            text(
                "SELECT count(*) FROM jobs_outbox WHERE routing_key = 'job.succeeded' "
                "AND (envelope -> 'data' ->> 'job_id')::int = :job"
            ),
            {"job": job_id},
        )
    return int(count.scalar_one())


async def _inbox_holds(sessions: Sessions, count: int) -> bool:
    async with sessions() as session:
        held = (await session.execute(text("SELECT count(*) FROM jobs_inbox"))).scalar_one()
    return int(held) >= count


async def test_one_users_burst_does_not_delay_another_users_single_job(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    burst = [await player.submit_paid(1, preset_id=EDIT_PRESET) for _ in range(10)]
    await events.wait_for(JobDispatchedV1, count=2)
    single = await player.submit_paid(2, preset_id=EDIT_PRESET)
    await player.dispatched(single.job_id)
    await asyncio.sleep(0.5)  # dispatcher passes: A stays at its cap of 2
    assert [event.job_id for event in events.of(JobDispatchedV1)] == [
        burst[0].job_id, burst[1].job_id, single.job_id,
    ]  # fmt: skip

    await player.start(burst[0].job_id)
    await player.complete(burst[0].job_id)
    third = await player.dispatched(burst[2].job_id)  # A's next job takes the freed slot
    assert third.attempt == 1
    dispatches = [
        event.job_id for event in events.of(JobDispatchedV1) if event.job_id != single.job_id
    ]
    assert dispatches == [job.job_id for job in burst[:3]]
    async with jobs_sessions() as session:
        order = await session.execute(
            text("SELECT job_id FROM job_transitions WHERE to_stage = 'dispatched' ORDER BY id")
        )
        assert [row.job_id for row in order] == [
            burst[0].job_id, burst[1].job_id, single.job_id, burst[2].job_id,
        ]  # fmt: skip


async def test_queue_position_counts_the_jobs_ahead_in_the_same_workflow(
    jobs: None, player: JobsPlayer, events: EventLog
) -> None:
    positions = []
    for user in (9, 10, 11):
        created = await player.submit_paid(user, preset_id=EDIT_PRESET)
        # Each is handed over before the next is paid: a dispatch counts the dispatches
        # committed before it, not one committing at the same moment for another user.
        (queued,) = await events.wait_for(JobQueued, job_id=created.job_id)
        positions.append(queued.position)
    assert positions == [1, 2, 3]


async def test_cancel_while_waiting_and_while_processing_ends_in_job_canceled(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    first, second, held = [await player.submit_paid(12, preset_id=EDIT_PRESET) for _ in range(3)]
    await player.dispatched(second.job_id)
    await eventually(lambda: stage_is(jobs_sessions, held.job_id, "waiting"))
    await player.start(first.job_id)
    await eventually(lambda: stage_is(jobs_sessions, first.job_id, "processing"))

    await player.cancel(held.job_id, 12)
    (canceled_waiting,) = await events.wait_for(JobCanceled, job_id=held.job_id)
    await player.cancel(first.job_id, 12)
    (canceled_running,) = await events.wait_for(JobCanceled, job_id=first.job_id)

    assert (canceled_waiting.was_running, canceled_running.was_running) == (False, True)
    assert canceled_running.chat_id == 1012
    for job_id in (held.job_id, first.job_id):
        row = await job_row(jobs_sessions, job_id)
        assert (row["stage"], row["legacy"]) == ("canceled", "failed")
    assert not events.of(JobDispatchedV1, job_id=held.job_id)  # it never reached a runner
    late = await player.complete(first.job_id)  # the runner finished anyway: too late
    await eventually(lambda: _handled(jobs_sessions, late.id))
    assert (await job_row(jobs_sessions, first.job_id))["stage"] == "canceled"
    assert await _succeeded_in_outbox(jobs_sessions, first.job_id) == 0  # committed with the claim
    assert not events.of(JobSucceeded)  # so the gateway sends no photo for a refunded job


async def test_cancel_before_payment_and_a_strangers_cancel(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    created = await player.submit(13, preset_id=EDIT_PRESET)
    await player.cancel(created.job_id, 14)  # not theirs: ignored
    await player.cancel(created.job_id, 13)
    (canceled,) = await events.wait_for(JobCanceled, job_id=created.job_id)
    assert canceled.was_running is False
    assert len(events.of(JobCanceled)) == 1
    transitions = await history(jobs_sessions, created.job_id)
    assert transitions[-1] == ("awaiting_payment", "canceled", 1, "canceled_by_user")


async def test_a_rejected_debit_fails_the_job_with_the_reason(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    created = await player.submit(15, preset_id=EDIT_PRESET)
    await player.publish(
        DebitRejected(
            job_id=created.job_id,
            user_id=15,
            reason=DebitRejectReason.insufficient_funds,
            price=30,
            balance=10,
            shortfall=20,
        )
    )
    await eventually(lambda: stage_is(jobs_sessions, created.job_id, "failed"))
    row = await job_row(jobs_sessions, created.job_id)
    assert row["error"].startswith("insufficient_funds")
    assert (await history(jobs_sessions, created.job_id))[-1][3] == "insufficient_funds"
    assert not events.of(JobDispatchedV1)


async def test_a_repeated_request_makes_one_job(
    jobs: None, player: JobsPlayer, events: EventLog, jobs_sessions: Sessions
) -> None:
    created = await player.submit(16, preset_id=EDIT_PRESET)
    await player.request(16, preset_id=EDIT_PRESET, request_id=created.request_id)
    await eventually(lambda: _inbox_holds(jobs_sessions, 2))
    await asyncio.sleep(0.2)
    assert len(events.of(JobCreated)) == 1
    assert not events.of(JobRequestRejected)


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"preset_id": 99}, JobRejectReason.unknown_preset),
        ({"preset_id": DISABLED_PRESET}, JobRejectReason.unknown_preset),
        ({"preset_id": EDIT_PRESET, "image_key": None}, JobRejectReason.missing_image),
        ({"prompt": "x" * 1001}, JobRejectReason.prompt_too_long),
        ({"user_id": 999, "preset_id": EDIT_PRESET}, JobRejectReason.invalid_request),
    ],
)
async def test_a_bad_request_is_refused_with_a_reason_and_nothing_is_charged(
    jobs: None,
    player: JobsPlayer,
    events: EventLog,
    jobs_sessions: Sessions,
    request_fields: dict[str, Any],
    reason: JobRejectReason,
) -> None:
    user_id = request_fields.pop("user_id", 17)
    request_id = await player.request(user_id, **request_fields)
    (rejected,) = await events.wait_for(JobRequestRejected, request_id=request_id)
    assert (rejected.reason, rejected.user_id, rejected.chat_id) == (
        reason, user_id, 1000 + user_id,
    )  # fmt: skip
    assert rejected.detail
    assert not events.of(JobCreated)  # billing debits only on JobCreated
    async with jobs_sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM jobs"))).scalar_one() == 0


async def test_past_the_unfinished_jobs_cap_requests_are_refused(
    start_jobs: StartJobs, player: JobsPlayer, events: EventLog
) -> None:
    async with start_jobs(max_unfinished_jobs_per_user=2):
        await player.submit(18, preset_id=EDIT_PRESET)
        await player.submit(18, preset_id=EDIT_PRESET)
        request_id = await player.request(18, preset_id=EDIT_PRESET)
        (rejected,) = await events.wait_for(JobRequestRejected, request_id=request_id)
        other_user = await player.submit(19, preset_id=EDIT_PRESET)
    assert rejected.reason is JobRejectReason.active_jobs_cap
    assert other_user.price == 30
    assert len(events.of(JobCreated)) == 3


async def test_a_text_to_image_preset_needs_no_image(
    jobs: None, player: JobsPlayer, events: EventLog
) -> None:
    created = await player.submit_paid(20, preset_id=TEXT_PRESET, image_key=None)
    dispatched = await player.dispatched(created.job_id)
    assert (dispatched.workflow_type, dispatched.image_key, created.price) == (
        "qwen_image", None, 40,
    )  # fmt: skip
