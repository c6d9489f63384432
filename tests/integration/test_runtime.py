"""A service's runtime on the real broker and database: serving, health, loops, shutdown."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aio_pika
import aiohttp
import pytest
import uvicorn
from faststream.rabbit import RabbitBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import RawEnvelope
from contracts.events import JobProgress, JobStarted, JobSucceeded
from contracts.topology import Topology
from jobs.models import DELIVERY
from messaging.broker import create_broker, declare_topology, subscribe
from messaging.consumer import EventConsumer
from messaging.lifecycle import ServiceLifecycle
from messaging.runtime import ServiceRuntime
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings, ServiceSettings
from messaging.unit_of_work import UnitOfWork
from support.messaging import count, drain, eventually, publisher_for


@pytest.fixture
async def broker(amqp_url: str, topology: Topology) -> AsyncIterator[RabbitBroker]:
    broker = create_broker(BrokerSettings(url=amqp_url), graceful_timeout_s=5)  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    await broker.connect()
    yield broker
    await broker.stop()


async def test_shutdown_hands_back_undelivered_messages_without_counting_a_delivery(
    topology: Topology, broker: RabbitBroker, amqp_url: str
) -> None:
    """The consumer is cancelled before the drain, so nothing arrives only to be dropped."""
    queue = topology.service_queues["bot_gateway"]
    consumer = EventConsumer(queue.name)
    handled: list[int] = []

    @consumer.on(JobProgress)
    async def slow(event: JobProgress, envelope: RawEnvelope) -> None:
        await asyncio.sleep(0.3)
        handled.append(event.step)

    subscribe(broker, queue, consumer, prefetch=2)
    lifecycle = ServiceLifecycle(broker, amqp_url, topology)
    await lifecycle.on_startup()
    await broker.start()
    publisher = publisher_for(broker, topology)
    for step in range(20):
        await publisher.publish(JobProgress(job_id=1, attempt=1, step=step, total_steps=20))
    await eventually(lambda: _at_least(handled, 1), timeout_s=10)

    await lifecycle.on_shutdown()
    await broker.stop()

    remaining = await drain(amqp_url, queue.name)
    assert 1 <= len(handled) < 20
    assert sorted(handled + [_step(message.body) for message in remaining]) == list(range(20))
    assert [message.headers.get("x-delivery-count", 0) for message in remaining] == [0] * len(
        remaining
    )


async def _at_least(items: list[int], n: int) -> bool:
    return len(items) >= n


def _step(body: bytes) -> int:
    return int(RawEnvelope.model_validate_json(body).data["step"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_runtime_serves_health_handles_events_runs_loops_and_stops_cleanly(
    topology: Topology,
    database_url: str,
    amqp_url: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(text("TRUNCATE jobs_outbox, jobs_inbox"))
    port = _free_port()
    runtime = ServiceRuntime(
        "jobs",
        DELIVERY,
        database=DatabaseSettings(url=database_url),  # type: ignore[arg-type]
        broker=BrokerSettings(url=amqp_url, namespace=topology.namespace),  # type: ignore[arg-type]
        outbox=OutboxSettings(poll_interval_s=30),
        service=ServiceSettings(http_port=port, graceful_timeout_s=5),
    )
    ticks: list[float] = []

    @runtime.consumer.on(JobStarted)
    async def finish(event: JobStarted, uow: UnitOfWork) -> None:
        uow.emit(
            JobSucceeded(
                job_id=event.job_id,
                user_id=1,
                chat_id=1,
                attempt=event.attempt,
                result_key="r",
                duration_ms=1,
            )
        )

    async def tick() -> None:
        ticks.append(asyncio.get_running_loop().time())

    runtime.every(0.05, "tick", tick)
    server = uvicorn.Server(
        uvicorn.Config(runtime.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _healthy(port), timeout_s=20)
        sender = create_broker(BrokerSettings(url=amqp_url))  # type: ignore[arg-type]
        await sender.connect()
        await publisher_for(sender, topology).publish(
            JobStarted(job_id=5, attempt=1, runner_id="r1", total_steps=2)
        )
        await sender.stop()
        gateway = topology.service_queues["bot_gateway"].name
        seen = []
        for _ in range(50):
            seen += [m.type for m in await drain(amqp_url, gateway, idle_s=0.2)]
            if "job.succeeded" in seen:
                break
        assert "job.succeeded" in seen  # emitted in the handler's transaction, relayed on commit
        assert len(ticks) >= 2
        assert await _get(port, "/readyz") == (200, "ready")
        status, metrics = await _get(port, "/metrics")
        consumed = (
            f'imagebot_messages_consumed_total{{event_type="job.started",outcome="ok",'
            f'queue="{topology.namespace}.jobs"}} 1.0'
        )
        assert status == 200
        assert consumed in metrics
        assert (
            'imagebot_events_published_total{routing_key="job.succeeded",source="jobs"}' in metrics
        )

        await _delete_queue(amqp_url, topology.service_queues["jobs"].name)  # broker cancels
        await eventually(lambda: _status_is(port, "/readyz", 503), timeout_s=10)
        assert await _get(port, "/healthz") == (200, "ok")  # alive, just not ready
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)
    ticks_at_stop = len(ticks)
    await asyncio.sleep(0.2)
    assert len(ticks) == ticks_at_stop  # the loop stopped with the service
    assert await count(sessions, "SELECT count(*) FROM jobs_inbox") == 1
    assert await count(sessions, "SELECT count(*) FROM jobs_outbox WHERE published_at IS NULL") == 0


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def _status_is(port: int, path: str, status: int) -> bool:
    return (await _get(port, path))[0] == status


async def _healthy(port: int) -> bool:
    try:
        return await _get(port, "/readyz") == (200, "ready")
    except aiohttp.ClientError:
        return False


async def _delete_queue(amqp_url: str, name: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def test_the_gauges_no_event_updates_are_read_while_the_service_runs(
    topology: Topology,
    database_url: str,
    amqp_url: str,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The outbox backlog, its lag and the service's DLQ depth are set by the observe loop:
    made non-zero here, they must read non-zero on /metrics (they once were never set)."""
    async with sessions() as session, session.begin():
        await session.execute(text("TRUNCATE jobs_outbox, jobs_inbox"))
        await session.execute(  # unsent for a minute, backing off: the relay leaves it alone
            text(
                "INSERT INTO jobs_outbox (id, routing_key, envelope, created_at, next_attempt_at) "
                "VALUES (gen_random_uuid(), 'job.progress', '{}', now() - interval '60 seconds', "
                "now() + interval '1 hour')"
            )
        )
    port = _free_port()
    runtime = ServiceRuntime(
        "jobs",
        DELIVERY,
        database=DatabaseSettings(url=database_url),  # type: ignore[arg-type]
        broker=BrokerSettings(url=amqp_url, namespace=topology.namespace),  # type: ignore[arg-type]
        outbox=OutboxSettings(poll_interval_s=30),
        service=ServiceSettings(http_port=port, graceful_timeout_s=5, metrics_interval_s=0.2),
    )
    server = uvicorn.Server(
        uvicorn.Config(runtime.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    gpu_dlq = topology.gpu_queues["qwen_image"].dlq
    runtime.observe_dlqs(gpu_dlq)  # as jobs does for the GPU queues it dispatches to
    serving = asyncio.create_task(server.serve())
    dlq = topology.service_queues["jobs"].dlq
    try:
        await eventually(lambda: _healthy(port), timeout_s=20)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for _ in range(2):
                await channel.default_exchange.publish(aio_pika.Message(b"dead"), routing_key=dlq)
            await channel.default_exchange.publish(aio_pika.Message(b"dead"), routing_key=gpu_dlq)

        async def gauges_read() -> bool:
            metrics = (await _get(port, "/metrics"))[1]
            return (
                'imagebot_outbox_unsent{owner="jobs"} 1.0' in metrics
                and f'imagebot_dlq_messages{{dlq="{dlq}"}} 2.0' in metrics
                and f'imagebot_dlq_messages{{dlq="{gpu_dlq}"}} 1.0' in metrics
                and _gauge(metrics, 'imagebot_outbox_lag_seconds{owner="jobs"}') >= 60
            )

        await eventually(gauges_read, timeout_s=20)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)


def _gauge(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
