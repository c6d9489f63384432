"""Dead-letter tools on the real broker: list, show, replay (once each), purge, dry runs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker
from typer.testing import CliRunner, Result

from contracts.envelope import RawEnvelope, new_envelope
from contracts.events import JobCreated, JobRequested, TopUpRequested
from contracts.topology import Topology
from imagebot.cli import app
from messaging import dead_letters
from messaging.broker import create_broker, declare_topology, subscribe
from messaging.consumer import EventConsumer
from messaging.dead_letters import DeadLetter, DeadLetterError, DeadLetterQueues, select
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
    assert ids["billing"] in dry.output
    assert {s.dlq: s.count for s in await queues.summaries()}[
        topology.service_queues["billing"].dlq
    ] == 1  # the dry run moved nothing

    for service in by_name.values():
        service.broken = False
    for name in POISON:
        result = await asyncio.to_thread(_cli, amqp_url, topology, "replay", name, "--wait", "1")
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


async def test_an_id_in_the_dlq_that_the_filters_leave_out_is_not_called_missing(
    amqp_url: str, topology: Topology
) -> None:
    await declare_topology(amqp_url, topology)
    message = _event("billing")
    await _dead_letter_by_hand(amqp_url, topology.service_queues["billing"].name, [message])
    assert message.message_id is not None
    result = await asyncio.to_thread(
        _cli, amqp_url, topology, "replay", "billing", "--id", message.message_id,
        "--type", "no.such.type", "--wait", "0",
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"in the DLQ but not selected (--type/--since): {message.message_id}" in result.output
    assert "not found in the DLQ" not in result.output
    assert await _dlq_count(DeadLetterQueues(amqp_url, topology), "billing") == 1


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


async def test_a_broker_failure_mid_replay_is_reported_not_a_traceback(
    amqp_url: str, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    await declare_topology(amqp_url, topology)
    billing = topology.service_queues["billing"]
    await _dead_letter_by_hand(amqp_url, billing.name, [_event("billing"), _event("billing")])
    republish = dead_letters._republish
    sent = 0

    async def closing_after_one(channel: Any, *args: Any) -> None:
        nonlocal sent
        if sent == 1:
            await channel.close()  # the broker's channel goes away in the middle of the run
        sent += 1
        await republish(channel, *args)

    monkeypatch.setattr(dead_letters, "_republish", closing_after_one)
    result = await asyncio.to_thread(_cli, amqp_url, topology, "replay", "billing", "--wait", "0")
    assert result.exit_code == 1
    assert "the broker failed during the replay" in result.output
    assert "1 message(s) had been replayed" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # typer's exit 1, nothing raised past it
    monkeypatch.setattr(dead_letters, "_republish", republish)
    # one went back to billing's queue; the other returned to the DLQ as the connection closed
    assert await _dlq_count(DeadLetterQueues(amqp_url, topology), "billing") == 1


async def _dlq_count(queues: DeadLetterQueues, name: str) -> int:
    return len(await queues.show(name, None))


async def _dead_letter_by_hand(amqp_url: str, queue: str, messages: list[aio_pika.Message]) -> None:
    """Publish `messages` to `queue` and reject each without requeue: its DLQ gets them."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for message in messages:
            await channel.default_exchange.publish(message, routing_key=queue)
        source = await channel.get_queue(queue, ensure=False)
        for _ in messages:
            taken = await source.get(no_ack=False, timeout=5)
            assert taken is not None
            await taken.reject(requeue=False)


def _event(name: str) -> aio_pika.Message:
    envelope = new_envelope(POISON[name], source="test")
    return aio_pika.Message(
        envelope.model_dump_json().encode(),
        message_id=str(envelope.id),
        correlation_id=envelope.correlation_id,
        type=envelope.type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _stable(letter: DeadLetter) -> tuple[object, ...]:
    """What reading must not change (the DLQ's own x-delivery-count counts reads on 3.x)."""
    headers = {k: v for k, v in letter.headers.items() if k != "x-delivery-count"}
    return letter.key, letter.body, headers, letter.first_death, letter.deaths, letter.replays


async def test_replay_of_messages_that_die_again_ends_with_exact_counts(
    services: tuple[RabbitBroker, dict[str, Service]], amqp_url: str, topology: Topology
) -> None:
    """A consumer that still cannot read them: each is replayed once, the command ends."""
    jobs = topology.service_queues["jobs"]
    queues = DeadLetterQueues(amqp_url, topology)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for _ in range(50):
            await channel.default_exchange.publish(_event("jobs"), routing_key=jobs.name)

    async def all_dead() -> bool:
        await asyncio.sleep(0.2)
        return await _dlq_count(queues, "jobs") == 50

    await eventually(all_dead, timeout_s=60)
    before = {letter.key for letter in await queues.show("jobs", None)}

    started = asyncio.get_running_loop().time()
    result = await asyncio.to_thread(_cli, amqp_url, topology, "replay", "jobs", "--wait", "30")
    elapsed = asyncio.get_running_loop().time() - started
    assert result.exit_code == 1, result.output  # they died again: not settled
    assert "replayed 50 of 50 matching message(s) (50 were in" in result.output
    assert "died again within 30s: 50" in result.output
    assert f"left in {jobs.dlq}: 0 (0 refused, 0 not selected)" in result.output
    assert elapsed < 30  # it stopped watching once all 50 were back

    await asyncio.sleep(1.5)  # nothing more arrives: no message was replayed twice
    after = await queues.show("jobs", None)
    assert len(after) == 50
    assert {letter.key for letter in after} == before
    assert all(letter.replays == 1 and letter.deaths == 2 for letter in after)

    # the same through the API: a progress total that is the real one
    totals: list[int] = []
    progressed: list[str] = []
    report = await queues.replay(
        "jobs",
        select(),
        wait_s=30,
        on_start=totals.append,
        on_progress=lambda _: progressed.append(""),
    )
    assert totals == [50]
    assert len(progressed) == 50
    assert len(report.replayed) == 50
    assert report.died_again is not None
    assert len(report.died_again) == 50
    await asyncio.sleep(1.5)
    assert await _dlq_count(queues, "jobs") == 50


async def test_reading_changes_nothing_and_the_first_death_survives_replays(
    services: tuple[RabbitBroker, dict[str, Service]], amqp_url: str, topology: Topology
) -> None:
    billing = topology.service_queues["billing"]
    queues = DeadLetterQueues(amqp_url, topology)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(_event("billing"), routing_key=billing.name)

    async def dead() -> bool:
        await asyncio.sleep(0.2)
        return await _dlq_count(queues, "billing") == 1

    await eventually(dead, timeout_s=30)
    [original] = await queues.show("billing")
    first = original.first_death
    assert first is not None
    assert first.reason == "delivery_limit"
    assert first.queue == billing.name
    assert first.count == 1
    assert first.time is not None
    assert (original.deaths, original.replays) == (1, 0)

    for _ in range(3):
        for args in (("list",), ("show", "billing"), ("replay", "billing", "--dry-run")):
            result = await asyncio.to_thread(_cli, amqp_url, topology, *args)
            assert result.exit_code == 0, result.output
    [read] = await queues.show("billing")
    assert _stable(read) == _stable(original)  # list, show and dry runs moved nothing

    for replays in (1, 2):  # still broken: it dies again each time, its first death kept
        result = await asyncio.to_thread(
            _cli, amqp_url, topology, "replay", "billing", "--wait", "30"
        )
        assert "replayed 1 of 1" in result.output
        assert "died again within 30s: 1" in result.output
        await eventually(dead, timeout_s=10)
        [letter] = await queues.show("billing")
        assert letter.key == original.key
        assert letter.first_death == first
        assert (letter.deaths, letter.replays) == (1 + replays, replays)
        assert letter.reason == "delivery_limit"
        assert letter.queue == billing.name
    shown = await asyncio.to_thread(_cli, amqp_url, topology, "show", "billing")
    assert f"first death: {first}" in shown.output
    assert "deaths 3, replays 2" in shown.output


async def test_a_replayed_message_carries_no_delivery_count_and_its_first_death(
    amqp_url: str, topology: Topology
) -> None:
    """Read a dozen times in the DLQ, a replayed message is new to its queue: a consumer does
    not back off as if it had failed; garbage is reported and left, the rest replayed."""
    await declare_topology(amqp_url, topology)
    jobs = topology.service_queues["jobs"]
    queues = DeadLetterQueues(amqp_url, topology)
    events = [_event("jobs") for _ in range(3)]
    garbage = aio_pika.Message(b"\xff not an envelope", message_id="garbage-2")
    await _dead_letter_by_hand(amqp_url, jobs.name, [*events, garbage])

    async def dead() -> bool:
        await asyncio.sleep(0.2)
        return await _dlq_count(queues, "jobs") == 4

    await eventually(dead, timeout_s=30)
    for _ in range(4):
        await queues.summaries()
        await queues.show("jobs", None)
        await queues.replay("jobs", select(), dry_run=True)
    garbage_key = "garbage-2"

    dry = await asyncio.to_thread(_cli, amqp_url, topology, "replay", "jobs", "--dry-run")
    assert "would replay 3 of 4 matching message(s)" in dry.output
    assert all(f"  {event.message_id}\n" in dry.output for event in events)
    assert f"would leave in place: {garbage_key}: not a valid event envelope" in dry.output

    result = await asyncio.to_thread(_cli, amqp_url, topology, "replay", "jobs", "--wait", "0")
    assert result.exit_code == 1  # the garbage was left, named; the rest went back
    assert "replayed 3 of 4 matching message(s) (4 were in" in result.output
    assert f"left in {jobs.dlq}: 1 (1 refused, 0 not selected)" in result.output
    assert f"left in place: {garbage_key}" in result.output

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        live = await channel.get_queue(jobs.name, ensure=False)
        replayed = []
        while (message := await live.get(no_ack=True, fail=False)) is not None:
            replayed.append(message)
    assert sorted(m.message_id or "" for m in replayed) == sorted(
        e.message_id or "" for e in events
    )
    for message in replayed:
        assert message.headers.get("x-delivery-count", 0) == 0
        assert "x-death" not in message.headers
        assert not any(key.startswith("x-first-death-") for key in message.headers)
        assert message.headers["x-imagebot-first-death-reason"] == "rejected"
        assert message.headers["x-imagebot-first-death-queue"] == jobs.name
        assert message.headers["x-imagebot-first-death-count"] == 1
        assert message.headers["x-imagebot-replays"] == 1
        assert message.headers["x-replayed-from"] == jobs.dlq
        assert message.type == "job.requested"
        assert message.correlation_id

    listing = await asyncio.to_thread(_cli, amqp_url, topology, "list")
    header, *rows = listing.output.splitlines()
    assert header.split() == ["DLQ", "MESSAGES", "OLDEST", "(UTC)", "REASONS"]
    assert any(row.split()[:2] == [jobs.dlq, "1"] and "rejected 1" in row for row in rows)

    declined = await asyncio.to_thread(_cli_input, amqp_url, topology, "n\n", "purge", "jobs")
    assert f"Delete 1 message(s) from {jobs.dlq} for good ({garbage_key})?" in declined.output
    assert declined.exit_code == 1
    assert await _dlq_count(queues, "jobs") == 1
    purged = await asyncio.to_thread(
        _cli, amqp_url, topology, "purge", "jobs", "--id", garbage_key, "--yes"
    )
    assert "purged 1 message(s)" in purged.output
    assert await _dlq_count(queues, "jobs") == 0


def _cli_input(amqp_url: str, topology: Topology, answer: str, *args: str) -> Result:
    env = {"AMQP_URL": amqp_url, "AMQP_NAMESPACE": topology.namespace}
    return CliRunner().invoke(app, ["dlq", *args], env=env, input=answer)
