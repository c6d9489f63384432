"""docs/subscribing.md's sample subscriber, run as written against the real broker.

The marked ```python block is executed as a module; only its names (exchange, queue, DLX) are
pointed at this test's throwaway namespace and its retry pause shortened. Our own publisher puts
events on the events exchange; the sample must handle the ones it knows, dead-letter a version it
does not know at once into its own DLQ, and dead-letter one its handler keeps failing on after
exactly DELIVERY_LIMIT + 1 handler runs, as the docs promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelNotFoundEntity

from contracts.envelope import Event, new_envelope
from contracts.events import JobSucceeded, PaymentSucceededV1
from contracts.topology import DELIVERY_LIMIT, Topology
from messaging.broker import create_broker
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings
from support.messaging import drain, eventually

DOC = Path(__file__).resolve().parents[2] / "docs" / "subscribing.md"
MARKER = "<!-- tested: tests/integration/test_subscribing_docs.py"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
NAMES = ("AMQP_URL", "EVENTS", "QUEUE", "DLX", "RETRY_PAUSE_S", "HANDLERS", "main")


def sample_code() -> str:
    """The one ```python block of the doc, which must carry the marker: no untested code."""
    text = DOC.read_text(encoding="utf-8")
    blocks = list(PYTHON_BLOCK.finditer(text))
    assert len(blocks) == 1, "subscribing.md should hold exactly one python block, the tested one"
    [block] = blocks
    before = text[: block.start()].rstrip().splitlines()[-1]
    assert before.startswith(MARKER), "the python block must follow the tested-marker comment"
    return block.group(1)


def test_the_doc_sample_is_the_one_python_block_and_compiles() -> None:
    compile(sample_code(), str(DOC), "exec")


class Sample:
    """The doc's subscriber loaded as a module, its names under the test's namespace."""

    def __init__(self, amqp_url: str, topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AMQP_URL", amqp_url)
        self.module: dict[str, Any] = {"__name__": "subscribing_sample"}
        exec(compile(sample_code(), str(DOC), "exec"), self.module)
        missing = [name for name in NAMES if name not in self.module]
        assert not missing, f"the sample no longer defines {missing}"
        assert self.module["AMQP_URL"] == amqp_url
        self.queue = f"{topology.namespace}.analytics"
        self.dlq = f"{self.queue}.dlq"
        self.dlx = f"{topology.namespace}.analytics.dlx"
        self.module.update(
            EVENTS=topology.events_exchange, QUEUE=self.queue, DLX=self.dlx, RETRY_PAUSE_S=0.05
        )

    @property
    def handlers(self) -> dict[tuple[str, int], Callable[[dict[str, Any]], None]]:
        handlers: dict[tuple[str, int], Callable[[dict[str, Any]], None]] = self.module["HANDLERS"]
        return handlers

    async def delete(self, amqp_url: str) -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in (self.queue, self.dlq):
                await channel.queue_delete(name)
            await channel.exchange_delete(self.dlx)


@pytest.fixture
async def publisher(amqp_url: str, topology: Topology) -> AsyncIterator[EventPublisher]:
    """Our publisher on the test's events exchange, which only the sample's queue is bound to
    (so a mandatory publish that routes proves the sample's binding is there)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(
            topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
    broker = create_broker(BrokerSettings(url=amqp_url))
    await broker.connect()
    yield EventPublisher(broker, topology.events_exchange, source="test", timeout_s=10)
    await broker.stop()


async def publish_once_routed(
    publisher: EventPublisher, event: Event, still_running: Callable[[], None]
) -> None:
    """Publish `event`, retrying while nothing is bound to its key yet (the sample starting)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            await publisher.publish(event)
            return
        except Exception:
            still_running()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def queue_depth(amqp_url: str, queue: str) -> int | None:
    """Ready messages in `queue`, or None when it does not exist."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except ChannelNotFoundEntity:
            return None
        count = declared.declaration_result.message_count
        return int(count) if count is not None else 0


def death_reason(message: AbstractIncomingMessage) -> str:
    deaths: Any = (message.headers or {}).get("x-death") or []
    return str(deaths[0]["reason"]) if deaths else ""


async def test_the_subscribing_sample_handles_events_and_dead_letters_into_its_own_dlq(
    amqp_url: str,
    topology: Topology,
    publisher: EventPublisher,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sample = Sample(amqp_url, topology, monkeypatch)
    poison_payment_id = 666
    runs: list[int] = []
    original = sample.handlers[("payment.succeeded", 1)]

    def failing_for_the_poison(event: dict[str, Any]) -> None:
        """The sample's own handler, except that it keeps failing on one payment."""
        if event["data"]["payment_id"] == poison_payment_id:
            runs.append(poison_payment_id)
            raise RuntimeError("cannot handle this one")
        original(event)

    sample.handlers[("payment.succeeded", 1)] = failing_for_the_poison
    printed: list[str] = []

    running = asyncio.create_task(sample.module["main"]())

    def still_running() -> None:
        """The sample's main() runs until stopped: if it ended, its error is the failure."""
        if running.done():
            running.result()
            raise AssertionError("the sample's main() returned")

    async def said(line: str) -> bool:
        still_running()
        printed.extend(capsys.readouterr().out.splitlines())
        return line in printed

    try:
        paid = PaymentSucceededV1(  # the version the sample handles (published beside v2)
            payment_id=7,
            user_id=3,
            telegram_id=5_000_000_000,
            amount_kopecks=10_000,
            credits=100,
            balance=160,
        )
        await publish_once_routed(publisher, paid, still_running)
        await eventually(lambda: said("payment 7: 100 credits for user 3"))

        done = JobSucceeded(
            job_id=41, user_id=3, chat_id=5, attempt=1, result_key="results/41.png", duration_ms=900
        )
        await publish_once_routed(publisher, done, still_running)
        await eventually(lambda: said("job 41 succeeded in 900 ms"))

        unknown = new_envelope(paid, source="test").model_copy(update={"version": 99})
        await publisher.publish_envelope(unknown, paid.routing_key())
        poison = paid.model_copy(update={"payment_id": poison_payment_id})
        poisoned = await publisher.publish(poison)

        async def both_dead() -> bool:
            still_running()
            return await queue_depth(amqp_url, sample.dlq) == 2

        await eventually(both_dead)
        await asyncio.sleep(0.3)  # no run after the message was dead-lettered
        assert len(runs) == DELIVERY_LIMIT + 1 == 6
        assert not any(str(poison_payment_id) in line for line in printed)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    try:
        assert await queue_depth(amqp_url, sample.queue) == 0  # acked, not merely held
        dead = await drain(amqp_url, sample.dlq, idle_s=0.3)
        by_id = {uuid.UUID(str(message.message_id)): message for message in dead}
        assert set(by_id) == {unknown.id, poisoned.id}
        assert death_reason(by_id[unknown.id]) == "rejected"
        assert death_reason(by_id[poisoned.id]) == "delivery_limit"
    finally:
        await sample.delete(amqp_url)
