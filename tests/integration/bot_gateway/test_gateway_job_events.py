"""The one path of each job event the gateway consumes: decided on the job as remembered (the
Start, or this process's last move, left it in `RecentJobs`), else as read; applied with its
mark and the user's messages as one statement while the job is still as decided on; read and
decided again when it moved meanwhile. Once per event, and the same words either way.

The jobs here are the gateway's rows only, written by the test, with job ids far above those
jobs hands out. The events go to the use cases in a unit of work of the test's own, as the
consumer runs them (statements counted on the test's engine), or straight to the gateway's
queue; billing and jobs never hear of them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aio_pika
import pytest
from aiogram.utils.i18n import I18n
from prometheus_client import REGISTRY
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot_gateway.app import LOCALES
from bot_gateway.conversation import Conversation, Customer, Draft
from bot_gateway.domain import JobState, JobView, Phase
from bot_gateway.models import DELIVERY
from bot_gateway.notifications import JobNotLinkedYetError, Notifications
from bot_gateway.recent_jobs import RecentJobs
from bot_gateway.repository import Jobs, move_statement
from contracts.envelope import Event, RawEnvelope, new_envelope
from contracts.events import (
    DebitRejected,
    DebitRejectReason,
    JobCanceled,
    JobCreated,
    JobFailed,
    JobHeld,
    JobProgress,
    JobQueued,
    JobRejectReason,
    JobRejectReasonV1,
    JobRequestRejected,
    JobRequestRejectedV1,
    JobStarted,
    JobSucceeded,
)
from messaging.consumer import EventConsumer
from messaging.unit_of_work import AlreadyHandled, UnitOfWork
from support.gateway_harness import Stack, image_bytes, new_user
from support.messaging import eventually

_job_ids = itertools.count(random.randrange(1_000, 2_000) * 1_000_000)
_message_ids = itertools.count(900_000)

RESULT = "results/job-events.png"


@dataclass(frozen=True)
class Job:
    request_id: uuid.UUID
    job_id: int
    chat_id: int
    message_id: int
    language: str


@pytest.fixture
def notifications(stack: Stack) -> Notifications:
    """The gateway's use cases with a memory of their own: nothing remembered yet."""
    result = stack.store_root / RESULT
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_bytes(image_bytes((32, 32), "PNG"))
    return using(stack, RecentJobs())


def using(stack: Stack, recent: RecentJobs) -> Notifications:
    i18n = I18n(path=LOCALES, default_locale="ru", domain="messages")
    return Notifications(
        i18n,
        default_language="ru",
        edit_interval_s=0.3,
        recent_jobs=recent,
        mail_committed=stack.gateway.sender.notify,
    )


def engine_of(stack: Stack) -> AsyncEngine:
    return stack.gateway.runtime.engine


def unit(engine: AsyncEngine, cause: RawEnvelope | None = None) -> UnitOfWork:
    return UnitOfWork(engine, DELIVERY, source="bot_gateway", cause=cause)


USE_CASES: dict[str, Callable[[Notifications], Callable[[Any, UnitOfWork], Awaitable[None]]]] = {
    "job.created": lambda n: n.job_created,
    "job.queued": lambda n: n.queued,
    "job.started": lambda n: n.started,
    "job.progress": lambda n: n.progress,
    "job.succeeded": lambda n: n.succeeded,
    "job.failed": lambda n: n.failed,
    "job.canceled": lambda n: n.canceled,
    "balance.debit_rejected": lambda n: n.debit_rejected,
    "job.request_rejected": lambda n: n.request_rejected,
}


async def handle(engine: AsyncEngine, notifications: Notifications, cause: RawEnvelope) -> bool:
    """`cause` handled as the consumer handles it: False when it was handled already."""
    event = EventConsumer.decode(cause.model_dump_json().encode())[1]
    if isinstance(event, JobRequestRejectedV1):
        use_case = notifications.request_rejected_v1
    else:
        use_case = USE_CASES[event.event_type](notifications)
    try:
        async with unit(engine, cause) as uow:
            await use_case(event, uow)
            await uow.commit()
    except AlreadyHandled:
        return False
    return True


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


def as_requested(job: Job) -> JobView:
    """The job as the gateway's Start leaves it in `RecentJobs` (`Conversation.request_job`)."""
    return JobView(
        job.request_id,
        job.chat_id,
        job.language,
        "Эскиз",
        7,
        job.message_id,
        JobState(Phase.requested),
    )


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


WORDS = {
    "ru": ["в очереди, позиция 2", "работа началась", "шаг 1 из 3", "шаг 2 из 3", "готово"],
    "en": ["in the queue, position 2", "started", "step 1 of 3", "step 2 of 3", "done"],
}


def about(event: Event, job: Job) -> RawEnvelope:
    """`event` as jobs sends it: every event about a job carries its request id."""
    return new_envelope(event, source="jobs", correlation_id=str(job.request_id))


def wrapped(event: Event) -> RawEnvelope:
    """`event` correlated with nothing the gateway knows."""
    return new_envelope(event, source="jobs")


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
    inbox = DELIVERY.inbox
    async with engine_of(stack).connect() as connection:
        found = await connection.execute(
            select(inbox.c.event_id).where(inbox.c.event_id == event_id)
        )
        return found.first() is not None


def consumed(stack: Stack, event_type: str, outcome: str) -> float:
    labels = {"queue": stack.gateway.runtime.consumer.queue, "event_type": event_type}
    value = REGISTRY.get_sample_value(
        "imagebot_messages_consumed_total", {**labels, "outcome": outcome}
    )
    return value or 0.0


async def _more(stack: Stack, event_type: str, outcome: str, than: float) -> bool:
    return consumed(stack, event_type, outcome) > than


def as_job(payload: dict[str, Any], source: Job, target: Job) -> Any:
    """`payload` as it would read for `target`: its buttons name the request, an edit its
    status message."""
    moved = json.loads(json.dumps(payload).replace(source.request_id.hex, target.request_id.hex))
    if "message_id" in moved:
        moved["message_id"] = target.message_id
    return moved


async def requested_from_jobs(stack: Stack, request_id: uuid.UUID) -> bool:
    """Whether JobRequested for `request_id` is in the gateway's outbox; it is kept from jobs
    (marked published), as no relay of this test's units hands it over."""
    outbox = DELIVERY.outbox
    async with engine_of(stack).begin() as connection:
        found = await connection.execute(
            update(outbox)
            .where(outbox.c.envelope["data"]["request_id"].astext == str(request_id))
            .values(published_at=func.now())
            .returning(outbox.c.routing_key)
        )
        return [row.routing_key for row in found] == ["job.requested"]


@contextmanager
def counted(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statements sent on `engine` meanwhile."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sqlalchemy_events.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sqlalchemy_events.remove(engine.sync_engine, "before_cursor_execute", count)


@pytest.mark.parametrize("language", ["ru", "en"])
async def test_each_event_moves_and_words_the_job_alike_remembered_or_read(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine, language: str
) -> None:
    """One job remembered from its Start, one this process never saw: the same moves, the
    same words, the same result."""
    recent = RecentJobs()
    remembering = using(stack, recent)
    known = await requested(stack, language, linked=False)
    unknown = await requested(stack, language, linked=False)
    recent.moved(as_requested(known), JobState(Phase.requested))
    assert await handle(gateway_engine, remembering, about(created(known), known))
    assert await handle(gateway_engine, notifications, about(created(unknown), unknown))
    assert await state(stack, known) == (known.job_id, "created", 7, 0, 0, 0)
    assert await state(stack, unknown) == (unknown.job_id, "created", 7, 0, 0, 0)

    words = WORDS[language]
    for first, second, said in zip(story(known), story(unknown), words, strict=True):
        assert await handle(gateway_engine, remembering, about(first, known))
        assert await handle(gateway_engine, notifications, about(second, unknown))
        assert (await state(stack, known))[1:] == (await state(stack, unknown))[1:]
        shown = await outbound(stack, f"status:{known.request_id}")
        expected = await outbound(stack, f"status:{unknown.request_id}")
        assert f"«Эскиз»: {said}" in shown[0]["text"]
        assert as_job(shown[0], known, unknown) == expected[0]

    photo = await outbound(stack, f"result:{known.job_id}")
    expected = await outbound(stack, f"result:{unknown.job_id}")
    assert as_job(photo[0], known, unknown) == expected[0]
    assert await state(stack, known) == (known.job_id, "completed", 7, 1, 2, 3)
    assert recent.get(known.request_id) is None  # finished: nothing more to remember
    await stack.telegram.shown_eventually(known.chat_id, known.message_id, words[-1])


async def test_a_duplicate_changes_nothing_and_sends_nothing_twice(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine, amqp_url: str
) -> None:
    job = await requested(stack)
    for event in story(job)[:-1]:
        assert await handle(gateway_engine, notifications, about(event, job))
    success = story(job)[-1]
    twice = about(success, job)
    await deliver(stack, amqp_url, twice)
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, "готово")
    await stack.telegram.wait_for(job.chat_id, "«Эскиз» готово", method="sendPhoto")
    settled = (await state(stack, job), await outbound(stack, f"status:{job.request_id}"))

    duplicates = consumed(stack, "job.succeeded", "duplicate")
    assert not await handle(gateway_engine, notifications, twice)  # AlreadyHandled
    await deliver(stack, amqp_url, twice)  # the broker delivers it again
    await eventually(lambda: _more(stack, "job.succeeded", "duplicate", duplicates))
    now = (await state(stack, job), await outbound(stack, f"status:{job.request_id}"))
    assert now == settled
    assert len(stack.telegram.sent_to(job.chat_id, "sendPhoto")) == 1


async def test_one_event_handled_at_once_several_times_applies_once(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    job = await requested(stack)
    queued, started, progress = story(job)[:3]
    assert await handle(gateway_engine, notifications, about(queued, job))
    assert await handle(gateway_engine, notifications, about(started, job))
    before = await outbound(stack, f"status:{job.request_id}")
    cause = about(progress, job)
    results = await asyncio.gather(
        *(handle(gateway_engine, notifications, cause) for _ in range(6))
    )
    after = await outbound(stack, f"status:{job.request_id}")

    assert results.count(True) == 1
    assert after[1] == before[1] + 1
    assert await state(stack, job) == (job.job_id, "running", 7, 1, 1, 3)


async def test_a_move_decided_on_a_job_that_moved_since_writes_nothing(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    job = await requested(stack)
    queued, started = story(job)[:2]
    cause = about(queued, job)
    async with unit(gateway_engine, cause) as uow:
        seen = await Jobs(uow.read).view(job_id=job.job_id)
        assert seen is not None
        change = notifications.on_queued(seen, queued)
        assert change is not None
        assert await handle(gateway_engine, notifications, about(started, job))  # meanwhile
        shown = await outbound(stack, f"status:{job.request_id}")
        statement = move_statement(seen, change, edit_interval=timedelta(seconds=0.3))
        assert await uow.apply(*statement) is None

    assert not await handled(stack, cause.id)  # never marked handled unless it applied
    assert await state(stack, job) == (job.job_id, "running", 7, 1, 0, 3)
    assert await outbound(stack, f"status:{job.request_id}") == shown


async def test_an_event_that_overtakes_job_created_links_the_job_by_its_request(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    """JobCreated and the job's later events travel side by side: whichever comes first links
    the job (by the correlation id), nothing waits, and JobCreated later only adds the price."""
    job = await requested(stack, linked=False)
    cause = about(story(job)[0], job)
    assert await handle(gateway_engine, notifications, cause)
    assert await handled(stack, cause.id)
    assert await state(stack, job) == (job.job_id, "queued", 7, 0, 0, 0)
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, "в очереди, позиция 2")

    late = about(created(job), job)
    assert await handle(gateway_engine, notifications, late)
    assert await handled(stack, late.id)
    assert await state(stack, job) == (job.job_id, "queued", 7, 0, 0, 0)  # no step back


async def test_an_event_of_an_unknown_job_waits_for_job_created(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine, amqp_url: str
) -> None:
    """No job with that id and no request by its correlation id: it comes back later."""
    job = await requested(stack, linked=False)
    queued = story(job)[0]
    cause = wrapped(queued)
    with pytest.raises(JobNotLinkedYetError):
        await handle(gateway_engine, notifications, cause)
    assert not await handled(stack, cause.id)
    assert await mailed(stack, f"status:{job.request_id}") is None

    retries = consumed(stack, "job.queued", "retry")
    await deliver(stack, amqp_url, cause)  # the gateway raises too: it comes back later
    await eventually(lambda: _more(stack, "job.queued", "retry", retries), timeout_s=5)
    await deliver(stack, amqp_url, wrapped(created(job)))
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, "в очереди, позиция 2")
    assert await handled(stack, cause.id)
    assert await state(stack, job) == (job.job_id, "queued", 7, 0, 0, 0)


async def test_a_start_or_progress_of_an_unknown_job_is_dropped(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    job = await requested(stack, linked=False)
    for event in story(job)[1:3]:
        cause = wrapped(event)
        assert await handle(gateway_engine, notifications, cause)
        assert await handled(stack, cause.id)
    assert await state(stack, job) == (None, "requested", 7, 0, 0, 0)


async def test_events_of_one_job_handled_side_by_side_end_as_in_any_order(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    job = await requested(stack)
    causes = [about(event, job) for event in story(job)[:3]]
    applied = await asyncio.gather(
        *(handle(gateway_engine, notifications, cause) for cause in causes)
    )

    assert applied == [True, True, True]  # each read again while the others moved the job
    assert [await handled(stack, cause.id) for cause in causes] == [True, True, True]
    assert await state(stack, job) == (job.job_id, "running", 7, 1, 1, 3)
    shown = await outbound(stack, f"status:{job.request_id}")
    assert "шаг 1 из 3" in shown[0]["text"]  # the furthest news, whatever the order


async def test_an_event_that_changes_nothing_is_marked_handled_and_says_nothing(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    job = await requested(stack)
    queued, started = story(job)[:2]
    assert await handle(gateway_engine, notifications, about(started, job))
    settled = (await state(stack, job), await outbound(stack, f"status:{job.request_id}"))
    late = about(queued, job)  # overtaken by the start

    with counted(gateway_engine) as statements:
        assert await handle(gateway_engine, notifications, late)
    assert len(statements) == 1  # remembered as the start left it: the mark alone
    assert await handled(stack, late.id)
    now = (await state(stack, job), await outbound(stack, f"status:{job.request_id}"))
    assert now == settled


async def test_job_created_for_a_waiting_request_is_one_statement(
    stack: Stack, gateway_engine: AsyncEngine
) -> None:
    """The common JobCreated finds its request still waiting: written at once, no read first;
    a JobCreated that comes after the job moved on reads it and still only links it."""
    here, elsewhere = using(stack, RecentJobs()), using(stack, RecentJobs())
    job = await requested(stack, linked=False)
    with counted(gateway_engine) as statements:
        assert await handle(gateway_engine, here, about(created(job), job))
    assert len(statements) == 1
    assert await state(stack, job) == (job.job_id, "created", 7, 0, 0, 0)

    late = await requested(stack, linked=False)
    # overtook JobCreated, handled by another replica
    assert await handle(gateway_engine, elsewhere, about(story(late)[0], late))
    with counted(gateway_engine) as statements:
        assert await handle(gateway_engine, here, about(created(late), late))
    assert len(statements) == 3  # the guess missed, then the read and the write
    assert await state(stack, late) == (late.job_id, "queued", 7, 0, 0, 0)


async def test_from_the_start_to_the_result_each_step_is_one_statement(
    stack: Stack, gateway_engine: AsyncEngine
) -> None:
    """The Start writes the request, JobRequested and the first text in one statement and
    leaves the job in `RecentJobs`; each event after it is one write, no read, no
    transaction, worded as a job read would be."""
    recent = RecentJobs()
    here = using(stack, recent)
    conversation = Conversation(lambda: unit(gateway_engine), recent_jobs=recent)
    user = new_user()
    customer = Customer(user.id, 1, user.id, "ru")
    draft = Draft(draft=uuid.uuid4().hex[:12], title="Эскиз", price=7, preset_id=3)
    message_id = next(_message_ids)
    i18n = I18n(path=LOCALES, default_locale="ru", domain="messages")
    with i18n.context(), i18n.use_locale("ru"), counted(gateway_engine) as statements:
        request_id = await conversation.request_job(customer, draft, message_id)  # as in a chat
    assert len(statements) == 1
    assert recent.get(request_id) is not None
    assert await requested_from_jobs(stack, request_id)
    job = Job(request_id, next(_job_ids), user.id, message_id, "ru")
    assert "принято" in (await outbound(stack, f"status:{request_id}"))[0]["text"]

    with counted(gateway_engine) as statements:
        assert await handle(gateway_engine, here, about(created(job), job))
        for event in story(job):
            assert await handle(gateway_engine, here, about(event, job))
    assert len(statements) == 1 + len(story(job))
    assert not any(s.lstrip().upper().startswith(("BEGIN", "SELECT")) for s in statements)
    assert await state(stack, job) == (job.job_id, "completed", 7, 1, 2, 3)
    assert "готово" in (await outbound(stack, f"status:{request_id}"))[0]["text"]
    assert await mailed(stack, f"result:{job.job_id}") is not None
    assert recent.get(request_id) is None  # finished: nothing more to remember

    with i18n.context(), i18n.use_locale("ru"), counted(gateway_engine) as statements:
        assert await conversation.request_job(customer, draft, message_id) == request_id
    assert len(statements) == 1  # tapped again: nothing more


async def test_a_job_not_remembered_is_read_then_written(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    job = await requested(stack)
    for event in story(job):
        with counted(gateway_engine) as statements:
            assert await handle(gateway_engine, using(stack, RecentJobs()), about(event, job))
        assert len(statements) == 2, event.event_type
    assert await state(stack, job) == (job.job_id, "completed", 7, 1, 2, 3)


def ends(job: Job) -> list[tuple[Event, str, str]]:
    """The events that end a job, the phase each leaves and words of the final text."""
    return [
        (JobFailed(job_id=job.job_id, user_id=1, chat_id=job.chat_id, reason="boom"),
         "failed", "7"),
        (JobCanceled(job_id=job.job_id, user_id=1, chat_id=job.chat_id, was_running=False),
         "canceled", "Эскиз"),
        (DebitRejected(job_id=job.job_id, user_id=1, price=7, balance=2, shortfall=5,
                       reason=DebitRejectReason.insufficient_funds), "rejected", "5"),
        (JobRequestRejected(request_id=job.request_id, user_id=1, chat_id=job.chat_id,
                            reason=JobRejectReason.price_changed, price=9), "rejected", "9"),
        (JobRequestRejectedV1(request_id=job.request_id, user_id=1, chat_id=job.chat_id,
                              reason=JobRejectReasonV1.invalid_request), "rejected", "Эскиз"),
    ]  # fmt: skip


@pytest.mark.parametrize("which", range(5))
async def test_an_ending_is_one_statement_and_goes_out_at_once(
    stack: Stack, gateway_engine: AsyncEngine, which: int
) -> None:
    job = await requested(stack)
    recent = RecentJobs()
    recent.moved(as_requested(job), JobState(Phase.created), link=(job.job_id, 7))
    event, phase, words = ends(job)[which]
    with counted(gateway_engine) as statements:
        assert await handle(gateway_engine, using(stack, recent), about(event, job))
    assert len(statements) == 1
    assert (await state(stack, job))[1] == phase
    assert words in (await outbound(stack, f"status:{job.request_id}"))[0]["text"]
    assert recent.get(job.request_id) is None
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, words)


async def test_a_remembered_job_that_moved_elsewhere_is_read_and_moved_as_it_is(
    stack: Stack, notifications: Notifications, gateway_engine: AsyncEngine
) -> None:
    """The job moved without this process (another replica): the write on the remembered
    facts applies nothing, and the read that follows finds the job as it is."""
    job = await requested(stack)
    queued, started = story(job)[:2]
    recent = RecentJobs()
    recent.moved(as_requested(job), JobState(Phase.created), link=(job.job_id, 7))
    assert await handle(gateway_engine, notifications, about(started, job))  # elsewhere

    late = about(queued, job)
    with counted(gateway_engine) as statements:
        assert await handle(gateway_engine, using(stack, recent), late)
    assert len(statements) == 3  # the remembered move missed; the read; the mark alone
    assert await handled(stack, late.id)
    assert await state(stack, job) == (job.job_id, "running", 7, 1, 0, 3)  # no step back

    progress = about(story(job)[2], job)
    assert await handle(gateway_engine, using(stack, recent), progress)
    remembered = recent.get(job.request_id)
    assert remembered is not None
    assert remembered.state == JobState(Phase.running, 1, 1, 3)


HELD = {
    "ru": "«Эскиз»: оплачено и ждёт: этот вид обработки ненадолго приостановлен",
    "en": "«Эскиз»: paid and waiting: this kind of processing is paused for a while",
}


@pytest.mark.parametrize("language", ["ru", "en"])
async def test_a_job_held_by_a_paused_workflow_says_why_and_goes_on_when_queued(
    stack: Stack, amqp_url: str, language: str
) -> None:
    job = await requested(stack, language)
    held = JobHeld(
        job_id=job.job_id,
        user_id=1,
        chat_id=job.chat_id,
        workflow_type="qwen_edit_2511",
        reason="workflow_paused",
    )
    await deliver(stack, amqp_url, about(held, job))
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, HELD[language])
    assert (await state(stack, job))[1] == "created"  # still waiting: nothing failed
    await deliver(stack, amqp_url, about(story(job)[0], job))  # resumed: JobQueued
    await stack.telegram.shown_eventually(job.chat_id, job.message_id, WORDS[language][0])
