"""How the consumer settles a message: transient trouble is retried in place, the rest counted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import NotSupportedError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from contracts.envelope import RawEnvelope, new_envelope
from contracts.events import JobProgress
from messaging.consumer import EventConsumer, is_transient


@dataclass
class FakeMessage:
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str = "m1"
    correlation_id: str | None = None
    settled: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.settled.append("ack")

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append("requeue" if requeue else "dead-letter")


def message() -> FakeMessage:
    event = JobProgress(job_id=1, attempt=1, step=1, total_steps=2)
    return FakeMessage(new_envelope(event, source="test").model_dump_json().encode())


class PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (OperationalError("UPDATE", {}, PgError("40P01")), True),  # deadlock
        (OperationalError("UPDATE", {}, PgError("40001")), True),  # serialization failure
        (OperationalError("UPDATE", {}, PgError("23505")), False),  # unique violation
        (PoolTimeoutError("QueuePool limit reached"), True),
        # a statement cached before a migration altered its table (the dialect drops its cache)
        (
            NotSupportedError(
                "SELECT", {}, AsyncAdapt_asyncpg_dbapi.InvalidCachedStatementError("plan")
            ),
            True,
        ),
        (NotSupportedError("SELECT", {}, PgError("0A000")), False),
        (AMQPConnectionError("Connect call failed"), True),  # the broker restarting
        (ChannelInvalidStateError("writer is None"), True),  # its channel closed under us
        (ValueError("a bug"), False),
        (KeyError("a bug"), False),
    ],
)
def test_only_trouble_that_is_no_fault_of_the_message_is_transient(
    error: BaseException, transient: bool
) -> None:
    assert is_transient(error) is transient


async def test_a_transient_error_is_retried_in_place_without_returning_the_message() -> None:
    consumer = EventConsumer("q", retry_backoff_s=0.01, transient_retry_s=5)
    calls = 0

    @consumer.on(JobProgress)
    async def flaky(event: JobProgress, envelope: RawEnvelope) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("database restarting")

    incoming = message()
    await consumer(incoming)  # type: ignore[arg-type]
    assert (calls, incoming.settled) == (3, ["ack"])


async def test_transient_trouble_past_the_window_returns_the_message_to_its_queue() -> None:
    consumer = EventConsumer("q", retry_backoff_s=0.01, transient_retry_s=0.05)

    @consumer.on(JobProgress)
    async def down(event: JobProgress, envelope: RawEnvelope) -> None:
        raise ConnectionRefusedError("database down")

    incoming = message()
    await consumer(incoming)  # type: ignore[arg-type]
    assert incoming.settled == ["requeue"]


async def test_a_bug_is_not_retried_in_place() -> None:
    consumer = EventConsumer("q", retry_backoff_s=0.01, transient_retry_s=5)
    calls = 0

    @consumer.on(JobProgress)
    async def broken(event: JobProgress, envelope: RawEnvelope) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug")

    incoming = message()
    await consumer(incoming)  # type: ignore[arg-type]
    assert (calls, incoming.settled) == (1, ["requeue"])


async def test_garbage_is_dead_lettered_at_once() -> None:
    consumer = EventConsumer("q")
    incoming = FakeMessage(b"not json")
    await consumer(incoming)  # type: ignore[arg-type]
    assert incoming.settled == ["dead-letter"]
