"""The consumer's fast paths for the events every job brings (JobCreated, JobQueued, JobStarted,
JobProgress, JobSucceeded): the same state and the same words as the general use cases, once
per event, and the general path whenever the fast one cannot be sure.

The jobs here are the gateway's rows only, written by the test, with job ids far above those
jobs hands out; events meant for the running gateway go straight to its queue, so billing and
jobs never hear of them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from aiogram.utils.i18n import I18n
from prometheus_client import REGISTRY
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot_gateway.app import LOCALES
from bot_gateway.domain import JobState, JobView, Phase
from bot_gateway.fast_paths import FastPaths
from bot_gateway.notifications import Notifications
from bot_gateway.recent_jobs import RecentJobs
from bot_gateway.repository import JobMoves
from contracts.envelope import Event, RawEnvelope, new_envelope
from contracts.events import JobCreated, JobProgress, JobQueued, JobStarted, JobSucceeded
from messaging.consumer import EventConsumer
from messaging.unit_of_work import UnitOfWork
from support.gateway_harness import Stack, image_bytes, new_user
from support.messaging import eventually

_job_ids = itertools.count(random.randrange(1_000, 2_000) * 1_000_000)
_message_ids = itertools.count(900_000)


@dataclass(frozen=True)
class Job:
    request_id: uuid.UUID
    job_id: int
    chat_id: int
    message_id: int
    language: str


@pytest.fixture
def notifications() -> Notifications:
    i18n = I18n(path=LOCALES, default_locale="ru", domain="messages")
    return Notifications(i18n, default_language="ru", edit_interval_s=0.3)


RESULT = "results/fast-paths.png"


@pytest.fixture
def fast(stack: Stack, notifications: Notifications) -> FastPaths:
    result = stack.store_root / RESULT
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_bytes(image_bytes((32, 32), "PNG"))
    return FastPaths(
        stack.gateway.runtime.engine, notifications, stack.gateway.sender.notify, RecentJobs()
    )


def engine_of(stack: Stack) -> AsyncEngine:
    return stack.gateway.runtime.engine


async def requested(stack: Stack, language: str = "ru", *, linked: bool = True) -> Job:
    """A request as the gateway keeps it; `linked`: JobCreated was handled (phase created)."""
    job = Job(uuid.uuid4(), next(_job_ids), new_user().id, next(_message_ids), language)
    async with engine_of(stack).begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO gateway_jobs (request_id, job_id, telegram_id, user_id, chat_id, "
                "language, title, phase, price, status_message_id) VALUES (:request_id, :job_id, "
                ":chat_id, 1, :chat_id, :language, 'Эскиз', :phase, 7, :message_id)"
            ),
            {
                "request_id": job.request_id,
                "job_id": job.job_id if linked else None,
                "chat_id": job.chat_id,
                "language": language,
                "phase": "created" if linked else "requested",
                "message_id": job.message_id,
            },
        )
    return job


def created(job: Job) -> JobCreated:
    return JobCreated(
        job_id=job.job_id,
        request_id=job.request_id,
        user_id=1,
        telegram_id=job.chat_id,
        chat_id=job.chat_id,
        price=7,
        workflow_type="qwen_edit_2511",
    )


def story(job: Job) -> list[Event]:
    """What a job goes through after JobCreated, as jobs and the runner tell it."""
    return [
        JobQueued(job_id=job.job_id, user_id=1, chat_id=job.chat_id, position=2, eta_seconds=30),
        JobStarted(job_id=job.job_id, attempt=1, runner_id="r1", total_steps=3),
        JobProgress(job_id=job.job_id, attempt=1, step=1, total_steps=3),
        JobProgress(job_id=job.job_id, attempt=1, step=2, total_steps=3),
        JobSucceeded(
            job_id=job.job_id,
            user_id=1,
            chat_id=job.chat_id,
            attempt=1,
            result_key=RESULT,
            duration_ms=900,
        ),
    ]


def wrapped(event: Event) -> RawEnvelope:
    return new_envelope(event, source="jobs")


def by_fast_path(
    fast: FastPaths, event: Event, cause: RawEnvelope | None = None
) -> Awaitable[bool]:
    """The fast path of `event`, in `cause` or an envelope of its own."""
    paths: dict[str, Callable[[Any, RawEnvelope], Awaitable[bool]]] = {
        "job.created": fast.created,
        "job.queued": fast.queued,
        "job.started": fast.started,
        "job.progress": fast.progress,
        "job.succeeded": fast.succeeded,
    }
    return paths[event.event_type](event, cause or wrapped(event))


async def by_general_path(stack: Stack, notifications: Notifications, cause: RawEnvelope) -> None:
    """The general use case of `cause`, in a unit of work, as the consumer runs it."""
    use_cases: dict[str, Callable[[Any, UnitOfWork], Awaitable[None]]] = {
        "job.created": notifications.job_created,
        "job.queued": notifications.queued,
        "job.started": notifications.started,
        "job.progress": notifications.progress,
        "job.succeeded": notifications.succeeded,
    }
    event = EventConsumer.decode(cause.model_dump_json().encode())[1]
    async with stack.gateway.runtime.unit_of_work() as uow:
        uow.cause = cause
        assert await uow.claim(cause.id, cause.type)
        await use_cases[cause.type](event, uow)
        await uow.commit()


async def deliver(stack: Stack, amqp_url: str, envelope: RawEnvelope) -> None:
    """`envelope` straight into the gateway's queue, as the broker delivers it."""
    queue = stack.gateway.runtime.consumer.queue
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                envelope.model_dump_json().encode(),
                message_id=str(envelope.id),
                correlation_id=envelope.correlation_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue,
        )


async def state(stack: Stack, job: Job) -> tuple[Any, ...]:
    async with engine_of(stack).connect() as connection:
        found = await connection.execute(
            text(
                "SELECT job_id, phase, price, attempt, step, total_steps FROM gateway_jobs "
                "WHERE request_id = :r"
            ),
            {"r": job.request_id},
        )
        return tuple(found.one())


async def mailed(stack: Stack, key: str) -> tuple[dict[str, Any], int] | None:
    """A mailbox row's payload and version, if there is one."""
    async with engine_of(stack).connect() as connection:
        found = await connection.execute(
            text("SELECT payload, version FROM gateway_outbound WHERE key = :key"), {"key": key}
        )
        row = found.first()
    return (row.payload, row.version) if row is not None else None


async def outbound(stack: Stack, key: str) -> tuple[dict[str, Any], int]:
    found = await mailed(stack, key)
    assert found is not None, f"nothing in the mailbox under {key}"
    return found


async def handled(stack: Stack, event_id: uuid.UUID) -> bool:
    async with engine_of(stack).connect() as connection:
        found = await connection.execute(
            text("SELECT 1 FROM bot_gateway_inbox WHERE event_id = :id"), {"id": event_id}
        )
        return found.first() is not None


def consumed(stack: Stack, event_type: str, outcome: str) -> float:
    labels = {"queue": stack.gateway.runtime.consumer.queue, "event_type": event_type}
    value = REGISTRY.get_sample_value(
        "imagebot_messages_consumed_total", {**labels, "outcome": outcome}
    )
    return value or 0.0


def as_job(payload: dict[str, Any], source: Job, target: Job) -> Any:
    """`payload` as it would read for `target`: its buttons name the request, an edit its
    status message."""
    moved = json.loads(json.dumps(payload).replace(source.request_id.hex, target.request_id.hex))
    if "message_id" in moved:
        moved["message_id"] = target.message_id
    return moved


@pytest.mark.parametrize("language", ["ru", "en"])
async def test_the_fast_paths_move_and_word_it_as_the_general_path_does(
    stack: Stack, fast: FastPaths, notifications: Notifications, language: str
) -> None:
    quick = await requested(stack, language, linked=False)
    general = await requested(stack, language, linked=False)
    assert await fast.created(created(quick), wrapped(created(quick)))
    await by_general_path(stack, notifications, wrapped(created(general)))
    assert await state(stack, quick) == (quick.job_id, "created", 7, 0, 0, 0)
    assert await state(stack, general) == (general.job_id, "created", 7, 0, 0, 0)

    words = WORDS[language]
    for quick_event, general_event, said in zip(story(quick), story(general), words, strict=True):
        assert await by_fast_path(fast, quick_event)
        await by_general_path(stack, notifications, wrapped(general_event))
        assert (await state(stack, quick))[1:] == (await state(stack, general))[1:]
        shown = await outbound(stack, f"status:{quick.request_id}")
        expected = await outbound(stack, f"status:{general.request_id}")
        assert f"«Эскиз»: {said}" in shown[0]["text"]
        assert as_job(shown[0], quick, general) == expected[0]

    photo = await outbound(stack, f"result:{quick.job_id}")
    expected = await outbound(stack, f"result:{general.job_id}")
    assert as_job(photo[0], quick, general) == expected[0]
    assert await state(stack, quick) == (quick.job_id, "completed", 7, 1, 2, 3)
    await stack.telegram.shown_eventually(quick.chat_id, quick.message_id, words[-1])


WORDS = {
    "ru": ["в очереди, позиция 2", "работа началась", "шаг 1 из 3", "шаг 2 из 3", "готово"],
    "en": ["in the queue, position 2", "started", "step 1 of 3", "step 2 of 3", "done"],
}


async def test_a_duplicate_changes_nothing_and_sends_nothing_twice(
    stack: Stack, fast: FastPaths, amqp_url: str
) -> None:
    job = await requested(stack)
    for event in story(job)[:-1]:
        assert await by_fast_path(fast, event)
    success = story(job)[-1]
    assert isinstance(success, JobSucceeded)
    twice = wrapped(success)
    await deliver(stack, amqp_url, twice)
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, "готово")
    await stack.telegram.wait_for(job.chat_id, "«Эскиз» готово", method="sendPhoto")
    settled = (await state(stack, job), await outbound(stack, f"status:{job.request_id}"))

    duplicates = consumed(stack, "job.succeeded", "duplicate")
    assert not await fast.succeeded(success, twice)  # handled already: the general path says
    await deliver(stack, amqp_url, twice)  # the broker delivers it again
    await eventually(lambda: _more(stack, "job.succeeded", "duplicate", duplicates))
    now = (await state(stack, job), await outbound(stack, f"status:{job.request_id}"))
    assert now == settled
    assert len(stack.telegram.sent_to(job.chat_id, "sendPhoto")) == 1


async def _more(stack: Stack, event_type: str, outcome: str, than: float) -> bool:
    return consumed(stack, event_type, outcome) > than


async def test_one_event_delivered_at_once_several_times_applies_once(
    stack: Stack, fast: FastPaths
) -> None:
    job = await requested(stack)
    queued, started, progress = story(job)[:3]
    assert await by_fast_path(fast, queued)
    assert await by_fast_path(fast, started)
    before = await outbound(stack, f"status:{job.request_id}")
    cause = wrapped(progress)
    results = await asyncio.gather(*(fast.progress(progress, cause) for _ in range(6)))
    after = await outbound(stack, f"status:{job.request_id}")

    assert results.count(True) == 1
    assert after[1] == before[1] + 1
    assert await state(stack, job) == (job.job_id, "running", 7, 1, 1, 3)


async def test_a_write_whose_job_moved_since_the_read_writes_nothing(
    stack: Stack, notifications: Notifications
) -> None:
    job = await requested(stack)
    queued, started = story(job)[:2]
    cause = wrapped(queued)
    async with engine_of(stack).connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        moves = JobMoves(autocommit, edit_interval_s=0.3)
        seen = await moves.read(cause.id, job_id=job.job_id)
        assert seen is not None
        change = notifications.on_queued(seen, queued)
        assert change is not None
        await by_general_path(stack, notifications, wrapped(started))  # meanwhile: it runs
        shown = await outbound(stack, f"status:{job.request_id}")
        assert not await moves.apply(seen, change, cause.id, cause.type)

    assert not await handled(stack, cause.id)  # never marked handled unless it applied
    assert await state(stack, job) == (job.job_id, "running", 7, 1, 0, 3)
    assert await outbound(stack, f"status:{job.request_id}") == shown


def about_request(event: Event, job: Job) -> RawEnvelope:
    """`event` as jobs sends it: every event about a job carries its request id."""
    return new_envelope(event, source="jobs", correlation_id=str(job.request_id))


@pytest.mark.parametrize("path", ["fast", "general"])
async def test_an_event_that_overtakes_job_created_links_the_job_by_its_request(
    stack: Stack, fast: FastPaths, notifications: Notifications, path: str
) -> None:
    """JobCreated and the job's later events travel side by side: whichever comes first links
    the job (by the correlation id), nothing waits, and JobCreated later only adds the price."""
    job = await requested(stack, linked=False)
    queued = story(job)[0]
    cause = about_request(queued, job)
    if path == "fast":
        assert await fast.queued(queued, cause)
    else:
        await by_general_path(stack, notifications, cause)
    assert await handled(stack, cause.id)
    assert await state(stack, job) == (job.job_id, "queued", 7, 0, 0, 0)
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, "в очереди, позиция 2")

    late = about_request(created(job), job)
    assert await fast.created(created(job), late)
    assert await handled(stack, late.id)
    assert await state(stack, job) == (job.job_id, "queued", 7, 0, 0, 0)  # no step back


async def test_an_event_of_an_unknown_job_waits_for_job_created(
    stack: Stack, fast: FastPaths, amqp_url: str
) -> None:
    """No job with that id and no request by its correlation id: it comes back later."""
    job = await requested(stack, linked=False)
    queued = story(job)[0]
    cause = wrapped(queued)  # correlated with nothing the gateway knows
    assert not await fast.queued(queued, cause)
    assert not await handled(stack, cause.id)
    assert await mailed(stack, f"status:{job.request_id}") is None

    retries = consumed(stack, "job.queued", "retry")
    await deliver(stack, amqp_url, cause)  # the general path raises: it comes back later
    await eventually(lambda: _more(stack, "job.queued", "retry", retries), timeout_s=5)
    await deliver(stack, amqp_url, wrapped(created(job)))
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, "в очереди, позиция 2")
    assert await handled(stack, cause.id)
    assert await state(stack, job) == (job.job_id, "queued", 7, 0, 0, 0)


async def test_events_of_one_job_handled_side_by_side_end_as_in_any_order(
    stack: Stack, fast: FastPaths
) -> None:
    job = await requested(stack)
    queued, started, progress = story(job)[:3]
    causes = [wrapped(queued), wrapped(started), wrapped(progress)]
    applied = await asyncio.gather(
        fast.queued(queued, causes[0]),
        fast.started(started, causes[1]),
        fast.progress(progress, causes[2]),
    )

    assert applied == [True, True, True]  # each read again while the others moved the job
    assert [await handled(stack, cause.id) for cause in causes] == [True, True, True]
    assert await state(stack, job) == (job.job_id, "running", 7, 1, 1, 3)
    shown = await outbound(stack, f"status:{job.request_id}")
    assert "шаг 1 из 3" in shown[0]["text"]  # the furthest news, whatever the order


async def test_an_event_that_changes_nothing_is_marked_handled_and_says_nothing(
    stack: Stack, fast: FastPaths
) -> None:
    job = await requested(stack)
    queued, started = story(job)[:2]
    assert await by_fast_path(fast, started)
    settled = (await state(stack, job), await outbound(stack, f"status:{job.request_id}"))
    late = wrapped(queued)  # overtaken by the start

    assert await fast.queued(queued, late)
    assert await handled(stack, late.id)
    now = (await state(stack, job), await outbound(stack, f"status:{job.request_id}"))
    assert now == settled


async def test_job_created_for_a_waiting_request_is_one_statement(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    """The common JobCreated finds its request still waiting: written at once, no read first;
    a JobCreated that comes after the job moved on reads it and still only links it."""
    statements: list[str] = []

    def counted(*args: Any) -> None:
        statements.append(args[2])

    fast = FastPaths(gateway_engine, notifications, lambda: None, RecentJobs())
    elsewhere = FastPaths(gateway_engine, notifications, lambda: None, RecentJobs())
    job = await requested(stack, linked=False)
    sqlalchemy_events.listen(gateway_engine.sync_engine, "before_cursor_execute", counted)
    try:
        assert await fast.created(created(job), wrapped(created(job)))
        assert len(statements) == 1
        assert await state(stack, job) == (job.job_id, "created", 7, 0, 0, 0)

        late = await requested(stack, linked=False)
        queued = story(late)[0]
        # overtook JobCreated, handled by another replica
        assert await elsewhere.queued(queued, about_request(queued, late))
        statements.clear()
        assert await fast.created(created(late), wrapped(created(late)))
        assert len(statements) == 3  # the guess missed, then the read and the write
        assert await state(stack, late) == (late.job_id, "queued", 7, 0, 0, 0)
    finally:
        sqlalchemy_events.remove(gateway_engine.sync_engine, "before_cursor_execute", counted)


def as_requested(job: Job) -> JobView:
    """The job as the gateway's Start left it in `RecentJobs` (see `Conversation.request_job`)."""
    return JobView(
        job.request_id,
        job.chat_id,
        job.language,
        "Эскиз",
        7,
        job.message_id,
        JobState(Phase.requested),
    )


async def test_a_job_this_process_moved_last_moves_on_in_one_statement_per_event(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    """Its Start left the job in `RecentJobs`: each event after it is one write, no read,
    worded as the general path words it."""
    statements: list[str] = []

    def counted(*args: Any) -> None:
        statements.append(args[2])

    recent = RecentJobs()
    fast = FastPaths(gateway_engine, notifications, lambda: None, recent)
    job = await requested(stack, linked=False)
    recent.moved(as_requested(job), JobState(Phase.requested))
    sqlalchemy_events.listen(gateway_engine.sync_engine, "before_cursor_execute", counted)
    try:
        assert await fast.created(created(job), about_request(created(job), job))
        for event in story(job):
            assert await by_fast_path(fast, event, about_request(event, job))
    finally:
        sqlalchemy_events.remove(gateway_engine.sync_engine, "before_cursor_execute", counted)

    assert len(statements) == 1 + len(story(job))
    assert all(statement.lstrip().startswith("WITH moved AS") for statement in statements)
    assert await state(stack, job) == (job.job_id, "completed", 7, 1, 2, 3)
    assert "готово" in (await outbound(stack, f"status:{job.request_id}"))[0]["text"].lower()
    assert await mailed(stack, f"result:{job.job_id}") is not None
    assert recent.get(job.request_id) is None  # finished: nothing more to guess


async def test_a_guess_that_missed_reads_the_job_and_moves_it_as_it_is(
    stack: Stack, fast: FastPaths, notifications: Notifications
) -> None:
    """The job moved without this process (another replica, the general path): the write on
    the guess applies nothing, and the read that follows finds the job as it is."""
    job = await requested(stack)
    queued, started = story(job)[:2]
    recent = RecentJobs()
    recent.moved(as_requested(job), JobState(Phase.created), link=(job.job_id, 7))
    guessing = FastPaths(engine_of(stack), notifications, lambda: None, recent)
    await by_general_path(stack, notifications, wrapped(started))  # it runs: the guess is stale

    late = about_request(queued, job)
    assert await guessing.queued(queued, late)

    assert await handled(stack, late.id)
    assert await state(stack, job) == (job.job_id, "running", 7, 1, 0, 3)  # no step back
    remembered = recent.get(job.request_id)
    assert remembered is not None
    assert remembered.state == JobState(Phase.running, 1, 0, 3)
