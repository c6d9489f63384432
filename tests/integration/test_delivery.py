"""The delivery machinery on the real broker and database: outbox, relay, inbox, DLQs."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.envelope import RawEnvelope, new_envelope
from contracts.events import JobCompleted, JobProgress, JobSucceeded
from contracts.topology import DELIVERY_LIMIT, QueueSpec, Topology
from jobs.models import DELIVERY
from messaging.broker import create_broker, declare_topology, subscribe
from messaging.consumer import EventConsumer, TransactionalConsumer
from messaging.lifecycle import ServiceLifecycle
from messaging.publisher import EventPublisher
from messaging.relay import OutboxRelay
from messaging.settings import BrokerSettings, OutboxSettings
from messaging.unit_of_work import UnitOfWork
from support.database import ROOT
from support.messaging import count, drain, eventually, publisher_for, scalar

Settle = Callable[[], Awaitable[None]]


def progress(step: int) -> JobProgress:
    return JobProgress(job_id=1, attempt=1, step=step, total_steps=1000)


@pytest.fixture
async def clean_tables(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        await session.execute(text("CREATE TABLE IF NOT EXISTS probe (event_id uuid, step int)"))
        await session.execute(text("TRUNCATE probe, jobs_outbox, jobs_inbox"))


@pytest.fixture
async def broker(amqp_url: str, topology: Topology) -> AsyncIterator[RabbitBroker]:
    """Connected, with the test's topology declared; subscribers may be added before start."""
    broker = create_broker(BrokerSettings(url=amqp_url), graceful_timeout_s=5)  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    await broker.connect()
    yield broker
    await broker.stop()


@pytest.fixture
def unit_of_work(engine: AsyncEngine) -> Callable[..., UnitOfWork]:
    return lambda cause=None: UnitOfWork(engine, DELIVERY, source="test", cause=cause)


async def test_relay_killed_mid_batch_loses_no_event(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    unit_of_work: Callable[..., UnitOfWork],
) -> None:
    async with unit_of_work() as uow:
        emitted = {uow.emit(progress(step)).id for step in range(50)}
        await uow.commit()

    crash = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "support.crashing_relay",
        env={
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT / 'src'}",
            "DATABASE_URL": database_url,
            "AMQP_URL": amqp_url,
            "AMQP_NAMESPACE": topology.namespace,
            "CRASH_AFTER": "25",
        },
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(crash.communicate(), timeout=60)
    assert crash.returncode == -9, stderr.decode()
    # The first batch of 20 was marked sent; the killed batch was not, though some went out.
    unsent = "SELECT count(*) FROM jobs_outbox WHERE published_at IS NULL"
    assert await count(sessions, unsent) == 30

    relay = OutboxRelay(
        sessions, DELIVERY, publisher_for(broker, topology), OutboxSettings(batch_size=20)
    )
    while (await relay.publish_pending()).published:
        pass
    assert await count(sessions, unsent) == 0

    delivered = await drain(amqp_url, topology.service_queues["bot_gateway"].name)
    ids = [uuid.UUID(message.message_id or "") for message in delivered]
    assert set(ids) == emitted
    assert len(ids) >= 55  # the ones confirmed before the kill went out twice
    assert all(message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for message in delivered)


async def test_a_message_delivered_twice_has_one_effect(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    sessions: async_sessionmaker[AsyncSession],
    unit_of_work: Callable[..., UnitOfWork],
) -> None:
    queue = topology.service_queues["bot_gateway"]
    consumer = TransactionalConsumer(queue.name, unit_of_work)

    @consumer.on(JobProgress)
    async def record(event: JobProgress, uow: UnitOfWork) -> None:
        await uow.execute(
            text("INSERT INTO probe VALUES (:id, :step)"), {"id": uow.cause.id, "step": event.step}
        )
        uow.emit(progress(event.step + 1000))

    subscribe(broker, queue, consumer, prefetch=10)
    await broker.start()
    publisher = publisher_for(broker, topology)
    envelope = new_envelope(progress(1), source="test")
    for _ in range(3):  # the same event id, sequentially and concurrently
        await publisher.publish_envelope(envelope, "job.progress")
    await asyncio.gather(*(publisher.publish_envelope(envelope, "job.progress") for _ in range(5)))
    await publisher.publish(progress(2))

    await eventually(lambda: _inbox_size(sessions, 2))
    await asyncio.sleep(0.5)  # let any late duplicate land
    assert await count(sessions, "SELECT count(*) FROM probe") == 2
    assert (
        await count(sessions, f"SELECT count(*) FROM probe WHERE event_id = '{envelope.id}'") == 1
    )
    assert await count(sessions, "SELECT count(*) FROM jobs_outbox") == 2


async def _inbox_size(sessions: async_sessionmaker[AsyncSession], expected: int) -> bool:
    return await count(sessions, "SELECT count(*) FROM jobs_inbox") >= expected


async def test_a_message_that_always_fails_is_dead_lettered_with_its_headers(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    sessions: async_sessionmaker[AsyncSession],
    unit_of_work: Callable[..., UnitOfWork],
) -> None:
    queue = topology.service_queues["bot_gateway"]
    attempts: list[int] = []
    consumer = TransactionalConsumer(queue.name, unit_of_work, retry_backoff_s=0.01)

    @consumer.on(JobProgress)
    async def fail(event: JobProgress, uow: UnitOfWork) -> None:
        attempts.append(event.step)
        uow.emit(progress(99))  # must never reach the outbox: the transaction rolls back
        raise RuntimeError("handler bug")

    subscribe(broker, queue, consumer, prefetch=10)
    await broker.start()
    envelope = new_envelope(progress(7), source="test", correlation_id="corr-7")
    await publisher_for(broker, topology).publish_envelope(envelope, "job.progress")

    dead = await _wait_for_dead_letters(amqp_url, queue, 1)
    message = dead[0]
    assert len(attempts) == DELIVERY_LIMIT + 1
    assert message.message_id == str(envelope.id)
    assert message.correlation_id == "corr-7"
    assert message.type == "job.progress"
    assert message.headers["x-event-version"] == 1
    assert RawEnvelope.model_validate_json(message.body) == envelope
    death = message.headers["x-death"][0]  # type: ignore[index]
    assert death["reason"] == "delivery_limit"  # type: ignore[index]
    assert death["queue"] == queue.name  # type: ignore[index]
    assert death["routing-keys"] == ["job.progress"]  # type: ignore[index]
    assert await count(sessions, "SELECT count(*) FROM jobs_inbox") == 0
    assert await count(sessions, "SELECT count(*) FROM jobs_outbox") == 0


async def _wait_for_dead_letters(
    amqp_url: str, queue: QueueSpec, expected: int
) -> list[AbstractIncomingMessage]:
    taken: list[AbstractIncomingMessage] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(taken) < expected and asyncio.get_running_loop().time() < deadline:
        taken += await drain(amqp_url, queue.dlq, idle_s=0.3)
    assert len(taken) == expected, f"{len(taken)} of {expected} dead-lettered"
    return taken


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid envelope: body: Invalid JSON"),
        (b'{"id": "x"}', "invalid envelope: id: Input should be a valid UUID"),
        ("wrong schema", "invalid job.progress v1 payload: step: Input should be a valid integer"),
        ("unknown version", "unknown event 'job.progress' version 9"),
        ("unhandled type", "no handler for 'job.completed'"),
    ],
)
async def test_a_malformed_event_goes_to_the_dlq_with_a_reason(
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
    body: bytes | str,
    reason: str,
) -> None:
    queue = topology.service_queues["bot_gateway"]
    handled: list[int] = []
    consumer = EventConsumer(queue.name)

    @consumer.on(JobProgress)
    async def record(event: JobProgress, envelope: RawEnvelope) -> None:
        handled.append(event.step)

    subscribe(broker, queue, consumer, prefetch=10)
    await broker.start()
    publisher = publisher_for(broker, topology)
    poison = _poison(body)
    await broker.publish(
        poison, exchange=topology.events_exchange, routing_key="job.progress", persist=True
    )
    await publisher.publish(progress(3))  # the consumer lives on

    with caplog.at_level(logging.ERROR, logger="messaging.consumer"):
        dead = await _wait_for_dead_letters(amqp_url, queue, 1)
        await eventually(lambda: _is_true(handled == [3]))
    assert dead[0].body == poison
    assert dead[0].headers["x-death"][0]["reason"] == "rejected"  # type: ignore[index]
    assert any(reason in record.getMessage() for record in caplog.records), caplog.text


async def _is_true(value: bool) -> bool:
    return value


def _poison(kind: bytes | str) -> bytes:
    if isinstance(kind, bytes):
        return kind
    envelope: dict[str, Any] = new_envelope(progress(1), source="test").model_dump(mode="json")
    if kind == "wrong schema":
        envelope["data"]["step"] = "many"
    elif kind == "unknown version":
        envelope["version"] = 9
    else:
        completed = JobCompleted(job_id=1, attempt=1, result_key="r.png", duration_ms=5, seed=1)
        envelope = new_envelope(completed, source="test").model_dump(mode="json")
    return RawEnvelope.model_validate(envelope).model_dump_json().encode()


async def test_an_unroutable_publish_raises_and_the_event_stays_in_the_outbox(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    sessions: async_sessionmaker[AsyncSession],
    unit_of_work: Callable[..., UnitOfWork],
) -> None:
    publisher = publisher_for(broker, topology)
    with pytest.raises(aio_pika.exceptions.DeliveryError, match="NO_ROUTE"):
        await publisher.publish_envelope(new_envelope(progress(1), source="t"), "nobody.listens")

    async with unit_of_work() as uow:
        uow.emit(progress(1))
        await uow.commit()
    async with sessions() as session, session.begin():
        await session.execute(text("UPDATE jobs_outbox SET routing_key = 'nobody.listens'"))
    relay = OutboxRelay(sessions, DELIVERY, publisher, OutboxSettings())
    result = await relay.publish_pending()
    assert (result.published, result.failed) == (0, 1)
    row = "SELECT count(*) FROM jobs_outbox WHERE published_at IS NULL AND attempts = 1"
    assert await count(sessions, row) == 1
    assert "NO_ROUTE" in str(await scalar(sessions, "SELECT last_error FROM jobs_outbox LIMIT 1"))


async def test_a_failing_row_backs_off_alone_and_a_corrupt_row_does_not_stop_the_rest(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    sessions: async_sessionmaker[AsyncSession],
    unit_of_work: Callable[..., UnitOfWork],
) -> None:
    async with unit_of_work() as uow:
        for step in range(3):
            uow.emit(progress(step))
        await uow.commit()
    async with sessions() as session, session.begin():
        first, second = (
            await session.execute(text("SELECT id FROM jobs_outbox ORDER BY seq LIMIT 2"))
        ).scalars()
        await session.execute(
            text("UPDATE jobs_outbox SET routing_key = 'nobody.listens' WHERE id = :id"),
            {"id": first},
        )
        await session.execute(
            text('UPDATE jobs_outbox SET envelope = \'{"not": "an envelope"}\' WHERE id = :id'),
            {"id": second},
        )
    relay = OutboxRelay(
        sessions, DELIVERY, publisher_for(broker, topology), OutboxSettings(poll_interval_s=60)
    )

    first_pass = await relay.publish_pending()
    second_pass = await relay.publish_pending()  # the failed rows are not due yet

    assert (first_pass.published, first_pass.failed) == (1, 2)
    assert (second_pass.published, second_pass.failed) == (0, 0)
    waiting = (
        "SELECT count(*) FROM jobs_outbox WHERE published_at IS NULL AND attempts = 1"
        " AND next_attempt_at > now() + interval '30 seconds'"
    )
    assert await count(sessions, waiting) == 2
    delivered = await drain(amqp_url, topology.service_queues["bot_gateway"].name)
    assert [RawEnvelope.model_validate_json(m.body).data["step"] for m in delivered] == [2]


async def test_stopping_the_relay_flushes_what_was_committed(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    relay = OutboxRelay(
        sessions,
        DELIVERY,
        publisher_for(broker, topology),
        OutboxSettings(poll_interval_s=60, batch_size=7),
    )
    relay.start()
    uow = UnitOfWork(engine, DELIVERY, source="test")  # no on_commit: only stop() flushes
    async with uow:
        for step in range(30):
            uow.emit(progress(step))
        await uow.commit()
    await relay.stop()
    assert await count(sessions, "SELECT count(*) FROM jobs_outbox WHERE published_at IS NULL") == 0
    assert len(await drain(amqp_url, topology.service_queues["bot_gateway"].name)) == 30


async def test_a_commit_hands_its_events_over_published_at_once_and_marked(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """From memory: no poll (60 s) and no sweep (60 s) is needed for the events to go out."""
    relay = OutboxRelay(
        sessions,
        DELIVERY,
        publisher_for(broker, topology),
        OutboxSettings(poll_interval_s=60, sweep_after_s=60),
    )
    relay.start()
    async with UnitOfWork(engine, DELIVERY, source="test", on_commit=relay.committed) as uow:
        for step in range(5):
            uow.emit(progress(step))
        await uow.commit()
    await all_sent(sessions)
    await relay.stop()
    assert sorted(await delivered_steps(amqp_url, topology)) == [0, 1, 2, 3, 4]


async def test_events_not_handed_over_are_swept_only_after_sweep_after_s(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    sessions: async_sessionmaker[AsyncSession],
    unit_of_work: Callable[..., UnitOfWork],
) -> None:
    """The sweep leaves fresh rows to the process that committed them; then it takes them
    (a crash between commit and publish)."""
    relay = OutboxRelay(
        sessions,
        DELIVERY,
        publisher_for(broker, topology),
        OutboxSettings(poll_interval_s=0.1, sweep_after_s=1.5),
    )
    relay.start()
    async with unit_of_work() as uow:  # committed, never handed over
        uow.emit(progress(7))
        await uow.commit()
    await asyncio.sleep(0.8)
    assert await count(sessions, UNSENT) == 1
    await all_sent(sessions)
    await relay.stop()
    assert await delivered_steps(amqp_url, topology) == [7]


class SlowPublisher(EventPublisher):
    """Confirms come a second late, as on a saturated machine."""

    async def publish_envelope(self, envelope: RawEnvelope, routing_key: str) -> None:
        await asyncio.sleep(1.0)
        await super().publish_envelope(envelope, routing_key)


async def test_the_sweep_leaves_what_memory_is_publishing(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A publish from memory slower than `sweep_after_s`: the sweep does not publish it too."""
    slow = SlowPublisher(broker, topology.events_exchange, source="test", timeout_s=10)
    relay = OutboxRelay(
        sessions, DELIVERY, slow, OutboxSettings(poll_interval_s=0.05, sweep_after_s=0.2)
    )
    relay.start()
    async with UnitOfWork(engine, DELIVERY, source="test", on_commit=relay.committed) as uow:
        uow.emit(progress(5))
        await uow.commit()
    await all_sent(sessions)
    await relay.stop()
    assert await delivered_steps(amqp_url, topology) == [5]


async def test_an_event_whose_publish_from_memory_fails_is_swept_later(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    relay = OutboxRelay(
        sessions,
        DELIVERY,
        publisher_for(broker, topology),
        OutboxSettings(poll_interval_s=0.1, sweep_after_s=0.5),
    )
    relay.start()

    def misrouted(rows: Sequence[tuple[str, RawEnvelope]]) -> None:
        """The publish from memory fails (here: no route); the row in the table is right."""
        relay.committed([("nobody.listens", envelope) for _, envelope in rows])

    async with UnitOfWork(engine, DELIVERY, source="test", on_commit=misrouted) as uow:
        uow.emit(progress(3))
        await uow.commit()
    await asyncio.sleep(0.2)
    assert await count(sessions, UNSENT) == 1
    await all_sent(sessions)
    await relay.stop()
    assert await delivered_steps(amqp_url, topology) == [3]


async def _zero(sessions: async_sessionmaker[AsyncSession], sql: str) -> bool:
    return await count(sessions, sql) == 0


UNSENT = "SELECT count(*) FROM jobs_outbox WHERE published_at IS NULL"


async def all_sent(sessions: async_sessionmaker[AsyncSession]) -> None:
    await eventually(lambda: _zero(sessions, UNSENT), timeout_s=5)


async def delivered_steps(amqp_url: str, topology: Topology) -> list[int]:
    """The steps of the JobProgress events that reached the gateway's queue, in order."""
    delivered = await drain(amqp_url, topology.service_queues["bot_gateway"].name)
    return [RawEnvelope.model_validate_json(m.body).data["step"] for m in delivered]


async def test_graceful_shutdown_finishes_in_flight_messages_then_flushes_the_outbox(
    clean_tables: None,
    topology: Topology,
    broker: RabbitBroker,
    amqp_url: str,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    queue = topology.service_queues["bot_gateway"]
    relay = OutboxRelay(
        sessions, DELIVERY, publisher_for(broker, topology), OutboxSettings(poll_interval_s=60)
    )
    consumer = TransactionalConsumer(
        queue.name, lambda cause: UnitOfWork(engine, DELIVERY, source="test", cause=cause)
    )
    started = asyncio.Event()

    @consumer.on(JobProgress)
    async def slow(event: JobProgress, uow: UnitOfWork) -> None:
        started.set()
        await asyncio.sleep(1.0)
        uow.emit(
            JobSucceeded(
                job_id=1, user_id=1, chat_id=1, attempt=1, result_key="r.png", duration_ms=1
            )
        )

    subscribe(broker, queue, consumer, prefetch=1)
    lifecycle = ServiceLifecycle(broker, amqp_url, topology, [relay])
    await lifecycle.on_startup()
    await broker.start()
    await lifecycle.after_startup()
    await publisher_for(broker, topology).publish(progress(1))
    await asyncio.wait_for(started.wait(), timeout=10)

    await lifecycle.on_shutdown()  # while the handler is still sleeping
    await broker.stop()

    assert await count(sessions, "SELECT count(*) FROM jobs_inbox") == 1
    assert await count(sessions, "SELECT count(*) FROM jobs_outbox WHERE published_at IS NULL") == 0
    delivered = await drain(amqp_url, queue.name)  # acknowledged: not redelivered
    assert [message.type for message in delivered] == ["job.succeeded"]


async def test_a_consumer_runs_no_more_handlers_at_once_than_its_prefetch(
    topology: Topology, broker: RabbitBroker
) -> None:
    queue = topology.service_queues["bot_gateway"]
    consumer = EventConsumer(queue.name)
    running, most, done = 0, 0, asyncio.Event()
    handled: list[int] = []

    @consumer.on(JobProgress)
    async def slow(event: JobProgress, envelope: RawEnvelope) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        handled.append(event.step)
        if len(handled) == 30:
            done.set()

    subscribe(broker, queue, consumer, prefetch=5)
    await broker.start()
    publisher = publisher_for(broker, topology)
    await asyncio.gather(*(publisher.publish(progress(step)) for step in range(30)))
    await asyncio.wait_for(done.wait(), timeout=20)
    assert most == 5
