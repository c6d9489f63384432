"""Dead-letter tools on the real broker: list, show, replay (once each), purge, dry runs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker
from typer.testing import CliRunner, Result

from contracts.envelope import RawEnvelope, new_envelope
from contracts.events import JobCreated, JobRequested, TopUpRequested
from contracts.topology import Topology
from imagebot.cli import app
from imagebot.dlq import DeadLetterError, DeadLetterQueues, select
from messaging.broker import create_broker, declare_topology, subscribe
from messaging.consumer import EventConsumer
from messaging.settings import BrokerSettings
from support.messaging import eventually

POISON = {
    "billing": TopUpRequested(
        request_id="8a0c5d0e-6f55-4b55-9d55-0d6c7a5f6b11",  # type: ignore[arg-type]
        user_id=1,
        telegram_id=10,
        chat_id=10,
        package_id="p1",
    ),
    "jobs": JobRequested(
        request_id="0f0e4e8a-1f49-4a2c-8f55-55b9c4a0e1aa",  # type: ignore[arg-type]
        user_id=1,
        telegram_id=10,
        chat_id=10,
        prompt="a cat",
        price=30,
    ),
    "bot_gateway": JobCreated(
        job_id=1,
        request_id="0f0e4e8a-1f49-4a2c-8f55-55b9c4a0e1aa",  # type: ignore[arg-type]
        user_id=1,
        telegram_id=10,
        chat_id=10,
        price=30,
        workflow_type="qwen_edit_2511",
    ),
}


class Service:
    """A consumer that fails every message until fixed, then counts what it handles."""

    def __init__(self, queue: str, event_type: type) -> None:
        self.broken = True
        self.handled: Counter[str] = Counter()
        self.consumer = EventConsumer(queue, retry_backoff_s=0, retry_backoff_max_s=0)

        @self.consumer.on(event_type)
        async def handle(event: object, envelope: RawEnvelope) -> None:
            if self.broken:
                raise RuntimeError("a bug, fixed later")
            self.handled[str(envelope.id)] += 1


@pytest.fixture
async def services(
    amqp_url: str, topology: Topology
) -> AsyncIterator[tuple[RabbitBroker, dict[str, Service]]]:
    broker = create_broker(BrokerSettings(url=amqp_url), graceful_timeout_s=2)  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    services = {
        name: Service(topology.service_queues[name].name, type(event))
        for name, event in POISON.items()
    }
    for name, service in services.items():
        subscribe(broker, topology.service_queues[name], service.consumer, prefetch=5)
    await broker.start()
    yield broker, services
    await broker.stop()


async def _publish_poison(amqp_url: str, topology: Topology) -> dict[str, str]:
    """One failing event into each service queue, one garbage message into jobs'."""
    ids = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for name, event in POISON.items():
            envelope = new_envelope(event, source="test")
            ids[name] = str(envelope.id)
            await channel.default_exchange.publish(
                aio_pika.Message(
                    envelope.model_dump_json().encode(),
                    message_id=str(envelope.id),
                    type=envelope.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=topology.service_queues[name].name,
            )
        await channel.default_exchange.publish(
            aio_pika.Message(b"{not json", message_id="garbage-1"),
            routing_key=topology.service_queues["jobs"].name,
        )
    return ids


def _cli(amqp_url: str, topology: Topology, *args: str) -> Result:
    env = {"AMQP_URL": amqp_url, "AMQP_NAMESPACE": topology.namespace}
    return CliRunner().invoke(app, ["dlq", *args], env=env)


async def test_poison_is_listed_replayed_once_after_the_fix_and_purged(
    services: tuple[RabbitBroker, dict[str, Service]], amqp_url: str, topology: Topology
) -> None:
    _, by_name = services
    ids = await _publish_poison(amqp_url, topology)
    queues = DeadLetterQueues(amqp_url, topology)

    async def all_dead() -> bool:
        counts = {s.dlq: s.count for s in await queues.summaries()}
        return all(counts[topology.service_queues[n].dlq] >= 1 for n in POISON) and (
            counts[topology.service_queues["jobs"].dlq] == 2
        )

    await eventually(all_dead, timeout_s=30)

    listing = await asyncio.to_thread(_cli, amqp_url, topology, "list")
    assert listing.exit_code == 0, listing.output
    jobs_line = next(
        line for line in listing.output.splitlines() if f"{topology.namespace}.jobs.dlq" in line
    )
    assert "delivery_limit 1" in jobs_line
    assert "rejected 1" in jobs_line
    shown = await asyncio.to_thread(_cli, amqp_url, topology, "show", "jobs")
    assert ids["jobs"] in shown.output
    assert "garbage-1" in shown.output

    dry = await asyncio.to_thread(_cli, amqp_url, topology, "replay", "billing", "--dry-run")
    assert "would replay 1 of 1" in dry.output
    assert {s.dlq: s.count for s in await queues.summaries()}[
        topology.service_queues["billing"].dlq
    ] == 1  # the dry run moved nothing

    for service in by_name.values():
        service.broken = False
    for name in POISON:
        result = await asyncio.to_thread(_cli, amqp_url, topology, "replay", name)
        if name == "jobs":  # the garbage stays, named, and the command says so
            assert result.exit_code == 1
            assert "left in place: garbage-1" in result.output
        else:
            assert result.exit_code == 0, result.output
        assert "replayed 1 of" in result.output

    async def each_handled_once() -> bool:
        return all(by_name[n].handled == Counter({ids[n]: 1}) for n in POISON)

    await eventually(each_handled_once, timeout_s=20)
    await asyncio.sleep(0.5)
    assert all(by_name[n].handled == Counter({ids[n]: 1}) for n in POISON)
    remaining = {s.dlq: s.count for s in await queues.summaries()}
    assert remaining[topology.service_queues["jobs"].dlq] == 1
    assert remaining[topology.service_queues["billing"].dlq] == 0

    purge = await asyncio.to_thread(_cli, amqp_url, topology, "purge", "jobs", "--yes")
    assert purge.exit_code == 0
    assert "purged 1" in purge.output
    assert sum(s.count for s in await queues.summaries()) == 0


async def test_unknown_queues_and_ids_get_a_clear_error_and_move_nothing(
    amqp_url: str, topology: Topology
) -> None:
    await declare_topology(amqp_url, topology)
    queues = DeadLetterQueues(amqp_url, topology)
    with pytest.raises(DeadLetterError, match="unknown queue 'payments'"):
        await queues.replay("payments", select())
    result = await asyncio.to_thread(
        _cli, amqp_url, topology, "replay", "jobs", "--id", "no-such-id"
    )
    assert result.exit_code == 1
    assert "not found in the DLQ: no-such-id" in result.output
    result = await asyncio.to_thread(_cli, amqp_url, topology, "show", "nonsense")
    assert result.exit_code == 1
    assert "unknown queue 'nonsense'" in result.output


async def test_a_message_whose_queue_is_gone_stays_in_the_dlq(
    services: tuple[RabbitBroker, dict[str, Service]], amqp_url: str, topology: Topology
) -> None:
    await _publish_poison(amqp_url, topology)
    queues = DeadLetterQueues(amqp_url, topology)
    billing = topology.service_queues["billing"]

    async def dead() -> bool:
        return {s.dlq: s.count for s in await queues.summaries()}[billing.dlq] == 1

    await eventually(dead, timeout_s=30)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(billing.name)
    report = await queues.replay("billing", select())
    assert report.replayed == []
    assert "refused it" in report.refused[0]
    assert {s.dlq: s.count for s in await queues.summaries()}[billing.dlq] == 1
