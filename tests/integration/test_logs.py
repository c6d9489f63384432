"""Structured logs on the real broker: every line written while a message is handled names it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from contracts.envelope import RawEnvelope, new_envelope
from contracts.events import JobProgress, JobStarted
from contracts.rpc import Account, EnsureAccount
from contracts.topology import Topology
from messaging.broker import create_broker, declare_topology, subscribe
from messaging.consumer import EventConsumer
from messaging.logs import configure_logging, handling, name_service
from messaging.rpc import RpcClient, RpcRefusedError, serve
from messaging.settings import BrokerSettings
from support.messaging import eventually

log = logging.getLogger("tests.handler")


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging("INFO", "json", stream=stream)
    name_service("logs-test")
    yield stream
    logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_log_lines_of_a_handled_message_carry_its_correlation_and_event_ids(
    amqp_url: str, topology: Topology, output: io.StringIO
) -> None:
    queue = topology.service_queues["bot_gateway"]
    consumer = EventConsumer(queue.name, retry_backoff_s=0)
    attempts: list[int] = []

    @consumer.on(JobProgress)
    async def note(event: JobProgress, envelope: RawEnvelope) -> None:
        log.info("progress of job %s", event.job_id)
        attempts.append(event.step)
        if len(attempts) == 1:
            raise RuntimeError("first delivery fails")

    broker = create_broker(BrokerSettings(url=amqp_url), graceful_timeout_s=5)  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    subscribe(broker, queue, consumer, prefetch=1)
    await broker.start()
    try:
        cause = new_envelope(
            JobStarted(job_id=4, attempt=1, runner_id="r", total_steps=2),
            source="test",
            correlation_id="request-42",
        )
        progress = new_envelope(
            JobProgress(job_id=4, attempt=1, step=1, total_steps=2), source="test", cause=cause
        )
        await broker.publish(
            progress.model_dump_json().encode(),
            exchange=topology.events_exchange,
            routing_key="job.progress",
            message_id=str(progress.id),
            persist=True,
        )
        await eventually(_count_is(attempts, 2), timeout_s=20)
        log.info("outside any message")
    finally:
        await broker.stop()

    records = lines(output)
    handled = [r for r in records if r.get("event_id") == str(progress.id)]
    messages = [r["message"] for r in handled]
    assert messages.count("progress of job 4") == 2
    assert any("failed (delivery 1)" in m for m in messages)  # the consumer's own ERROR line
    for record in handled:
        assert record["correlation_id"] == "request-42"
        assert record["event_type"] == "job.progress"
        assert record["service"] == "logs-test"
        assert {"timestamp", "level", "logger"} <= record.keys()
    [outside] = [r for r in records if r["message"] == "outside any message"]
    assert outside["correlation_id"] is None
    assert outside["level"] == "INFO"
    assert outside["logger"] == "tests.handler"


async def test_a_request_reply_server_logs_under_the_callers_correlation_id(
    amqp_url: str, topology: Topology, output: io.StringIO
) -> None:
    async def refuse(request: EnsureAccount) -> Account:
        raise RpcRefusedError("banned", "not today")

    server = create_broker(BrokerSettings(url=amqp_url), graceful_timeout_s=5)  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    serve(server, topology, EnsureAccount, refuse)
    caller = RpcClient(amqp_url, topology, timeout_s=5)
    await server.start()
    try:
        with handling(correlation_id="request-77"), pytest.raises(RpcRefusedError):
            await caller.call(EnsureAccount(telegram_id=5), Account)
    finally:
        await caller.close()
        await server.stop()

    [refused] = [r for r in lines(output) if "refused" in r["message"]]
    assert refused["correlation_id"] == "request-77"
    assert refused["event_type"] == "billing.ensure_account"


def _count_is(items: list[int], n: int) -> Any:
    async def check() -> bool:
        return len(items) >= n

    return check
