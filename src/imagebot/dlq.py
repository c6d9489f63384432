"""Dead-letter queues for operators: list, show, replay, purge; safe while services run.

Messages are read with `basic.get` and left unacknowledged unless acted upon; whatever is not
acknowledged returns to its DLQ when the channel closes, so a reading, a dry run or a failure
leaves the DLQ as it was. A replayed message goes back to the queue it died in (the default
exchange, routing key = that queue), with its message id, headers and properties, under
publisher confirms and `mandatory`; it leaves the DLQ only once the broker confirmed it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from contracts.envelope import RawEnvelope
from contracts.topology import Topology


class DeadLetterError(RuntimeError):
    """An operator asked for something that cannot be done; the message says what."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as an operator sees it."""

    message_id: str | None
    event_type: str | None
    queue: str | None
    reason: str | None
    deaths: int
    died_at: datetime | None
    headers: dict[str, Any]
    body: bytes

    @property
    def envelope(self) -> RawEnvelope | None:
        try:
            return RawEnvelope.model_validate_json(self.body)
        except ValueError:
            return None


@dataclass
class QueueSummary:
    dlq: str
    count: int
    oldest: datetime | None = None
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)
    matched: int = 0
    refused: list[str] = field(default_factory=list)


Selector = Callable[[DeadLetter], bool]


def select(
    ids: Iterable[str] = (), event_type: str | None = None, since: datetime | None = None
) -> Selector:
    """Messages with one of `ids` (all if none), of `event_type`, dead since `since`."""
    wanted = set(ids)

    def matches(letter: DeadLetter) -> bool:
        return (
            (not wanted or letter.message_id in wanted)
            and (event_type is None or letter.event_type == event_type)
            and (since is None or (letter.died_at is not None and letter.died_at >= since))
        )

    return matches


class DeadLetterQueues:
    """The DLQs of one topology on one broker."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self._url = amqp_url
        self._topology = topology

    def resolve(self, name: str) -> str:
        """The DLQ meant by `name`: a DLQ, its queue, or a service/workflow short name."""
        dlqs = {spec.dlq: spec.dlq for spec in self._topology.queues}
        for spec in self._topology.queues:
            dlqs[spec.name] = spec.dlq
        for service, spec in self._topology.service_queues.items():
            dlqs[service] = spec.dlq
        for workflow, spec in self._topology.gpu_queues.items():
            dlqs[f"gpu.{workflow}"] = spec.dlq
        if name not in dlqs:
            known = ", ".join(sorted(spec.dlq for spec in self._topology.queues))
            raise DeadLetterError(f"unknown queue {name!r}; dead-letter queues: {known}")
        return dlqs[name]

    async def summaries(self) -> list[QueueSummary]:
        summaries = []
        async with self._channel() as channel:
            for spec in self._topology.queues:
                summary = QueueSummary(dlq=spec.dlq, count=0)
                async for letter, _ in _browse(channel, spec.dlq):
                    summary.count += 1
                    summary.reasons[letter.reason or "unknown"] += 1
                    if letter.died_at and (
                        summary.oldest is None or letter.died_at < summary.oldest
                    ):
                        summary.oldest = letter.died_at
                summaries.append(summary)
        return summaries

    async def show(self, name: str, limit: int) -> list[DeadLetter]:
        shown: list[DeadLetter] = []
        async with self._channel() as channel:
            async for letter, _ in _browse(channel, self.resolve(name)):
                shown.append(letter)
                if len(shown) >= limit:
                    break
        return shown

    async def replay(
        self,
        name: str,
        matches: Selector,
        *,
        dry_run: bool = False,
        on_progress: Callable[[DeadLetter], None] = lambda _: None,
    ) -> ReplayReport:
        report = ReplayReport()
        dlq = self.resolve(name)
        async with self._channel() as channel:
            async for letter, message in _browse(channel, dlq):
                if not matches(letter):
                    continue
                report.matched += 1
                refusal = _refusal(letter)
                if refusal:
                    report.refused.append(refusal)
                    continue
                if not dry_run:
                    try:
                        await _republish(channel, letter, message)
                    except aio_pika.exceptions.DeliveryError as exc:
                        report.refused.append(
                            f"{letter.message_id}: queue {letter.queue!r} refused it ({exc})"
                        )
                        continue
                    await message.ack()
                report.replayed.append(letter.message_id or "?")
                on_progress(letter)
        return report

    async def purge(self, name: str, ids: Iterable[str] = ()) -> int:
        dlq = self.resolve(name)
        wanted = set(ids)
        async with self._channel() as channel:
            if not wanted:
                queue = await channel.get_queue(dlq, ensure=False)
                result = await queue.purge()
                return int(result.message_count or 0)
            purged = 0
            async for letter, message in _browse(channel, dlq):
                if letter.message_id in wanted:
                    await message.ack()
                    purged += 1
            return purged

    @asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        try:
            connection = await aio_pika.connect(self._url)
        except Exception as exc:
            raise DeadLetterError(f"cannot reach the broker: {exc}") from exc
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            yield channel


async def _browse(
    channel: AbstractChannel, dlq: str
) -> AsyncIterator[tuple[DeadLetter, AbstractIncomingMessage]]:
    """Every message of `dlq` once, unacknowledged (they return when the channel closes)."""
    try:
        queue = await channel.get_queue(dlq, ensure=True)
    except (aio_pika.exceptions.ChannelNotFoundEntity, aio_pika.exceptions.ChannelClosed) as exc:
        raise DeadLetterError(f"queue {dlq!r} does not exist on the broker") from exc
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        yield _dead_letter(message), message


def _dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    deaths = message.headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    died_at = first.get("time")
    if isinstance(died_at, datetime) and died_at.tzinfo is None:
        died_at = died_at.replace(tzinfo=UTC)
    return DeadLetter(
        message_id=message.message_id,
        event_type=message.type,
        queue=_text(first.get("queue")),
        reason=_text(first.get("reason")),
        deaths=_count(first.get("count")),
        died_at=died_at if isinstance(died_at, datetime) else None,
        headers=dict(message.headers),
        body=message.body,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def _refusal(letter: DeadLetter) -> str | None:
    """Why `letter` must stay where it is, if it must."""
    if letter.queue is None:
        return f"{letter.message_id}: no x-death header, so no queue to return it to"
    if letter.envelope is None:
        return f"{letter.message_id}: not a valid event envelope; inspect it with `dlq show`"
    return None


async def _republish(
    channel: AbstractChannel, letter: DeadLetter, message: AbstractIncomingMessage
) -> None:
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("x-death")}
    headers["x-replayed-from"] = message.routing_key or ""
    replayed = aio_pika.Message(
        letter.body,
        headers=headers,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        type=message.type,
        timestamp=message.timestamp,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await channel.default_exchange.publish(replayed, routing_key=str(letter.queue), mandatory=True)


def describe(letter: DeadLetter) -> str:
    """A human-readable dump of one dead letter."""
    envelope = letter.envelope
    body = (
        json.dumps(envelope.model_dump(mode="json"), indent=2, ensure_ascii=False)
        if envelope
        else f"(not an envelope) {letter.body[:500]!r}"
    )
    headers = {k: v for k, v in letter.headers.items() if k != "x-death"}
    return (
        f"message {letter.message_id}  type {letter.event_type}\n"
        f"  died in {letter.queue}: {letter.reason} (x{letter.deaths}) at {letter.died_at}\n"
        f"  headers {headers}\n{body}"
    )
