"""Dead-letter queues for operators: list, show, replay, purge; safe while services run.

One implementation for every operator's tool: `imagebot dlq ...` and the backend API's
operations area both use it (neither imports the other).

Reading: messages are taken with `basic.get`, each once per command, and left unacknowledged
unless acted upon; whatever is not acknowledged returns to its DLQ when the channel closes (never
`basic.reject`, which RabbitMQ 4.3+ counts as a failed delivery), so a listing, a dry run or a
failure leaves the DLQ's messages as they were. Only the DLQ's own `x-delivery-count` can move:
RabbitMQ before 4.3 counts every return of a quorum queue's message, so there it counts the times
the DLQ was read. That header is never shown as a failure count and never leaves the DLQ.

Replay: the messages in the DLQ when the command starts are taken first (a snapshot, held
unacknowledged), then each selected one is sent once to the queue it died in (the default
exchange, routing key = that queue) with its message id, properties and headers, under publisher
confirms and `mandatory`; it leaves the DLQ only once the broker confirmed it. The broker's
death headers are dropped (RabbitMQ 4 ignores `x-death` set by clients) and the first death is
kept in headers of our own (`x-imagebot-first-death-*`), with the deaths and replays so far and
the replay run's id; a message of this run that comes back into the DLQ is counted as having
died again and is never replayed twice by one run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from contracts.envelope import RawEnvelope
from contracts.topology import Topology

FIRST_DEATH_REASON = "x-imagebot-first-death-reason"
FIRST_DEATH_QUEUE = "x-imagebot-first-death-queue"
FIRST_DEATH_TIME = "x-imagebot-first-death-time"
FIRST_DEATH_COUNT = "x-imagebot-first-death-count"
DEATHS = "x-imagebot-deaths"
"""Deaths before the last replay (the broker's `x-death` counts only those since)."""
REPLAYS = "x-imagebot-replays"
REPLAYED_AT = "x-imagebot-replayed-at"
REPLAY_RUN = "x-imagebot-replay-run"
REPLAYED_FROM = "x-replayed-from"
BROKER_HEADERS = ("x-death", "x-delivery-count")
BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")
"""Headers the broker sets on dead-lettering or delivery: never copied to a live queue."""


BROKER_FAILURES = (
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
)
"""What a broker lost or closing under a command raises (aiormq's closed channel is a
RuntimeError of its own)."""


class DeadLetterError(RuntimeError):
    """An operator asked for something that cannot be done; the message says what."""


class ReplayInterruptedError(DeadLetterError):
    """The broker failed in the middle of a replay; `report` says what had been done by then.

    A message sent back but not yet acknowledged in the DLQ returns there as the connection
    closes: it may be in both places, and its consumer's inbox takes it once."""

    def __init__(self, report: ReplayReport, cause: BaseException) -> None:
        self.report = report
        super().__init__(
            f"the broker failed during the replay of {report.dlq} ({cause!r}): "
            f"{len(report.replayed)} message(s) had been replayed, the rest are still in the DLQ"
        )


@dataclass(frozen=True)
class Death:
    """One death: why, in which queue, when (first time), how many times."""

    reason: str | None
    queue: str | None
    time: datetime | None
    count: int

    def __str__(self) -> str:
        when = self.time.isoformat(timespec="seconds") if self.time else "an unknown time"
        return f"{self.reason or 'unknown'} in {self.queue or '?'} at {when} (x{self.count})"


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as an operator sees it."""

    message_id: str | None
    event_type: str | None
    queue: str | None
    """The queue it died in last: where a replay sends it."""
    reason: str | None
    deaths: int
    """Every death, across replays."""
    died_at: datetime | None
    """Its last death (its first in `queue` for `reason` since its last replay)."""
    headers: dict[str, Any]
    body: bytes
    first_death: Death | None = None
    replays: int = 0
    properties: dict[str, Any] = field(default_factory=dict)
    """The AMQP properties a replay keeps (message id, correlation id, type, ...)."""

    @property
    def key(self) -> str:
        """What `--id` matches: the message id, or a digest of the body when it has none."""
        return self.message_id or "sha256:" + hashlib.sha256(self.body).hexdigest()[:16]

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
    """What one replay did. Lists hold message keys (`DeadLetter.key`)."""

    dlq: str
    found: int = 0
    """Messages in the DLQ when the replay started."""
    present: list[str] = field(default_factory=list)
    """Every message of that snapshot, selected or not."""
    matched: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    """Sent back and confirmed (in a dry run: would be)."""
    refused: list[str] = field(default_factory=list)
    """`key: why` for each selected message left in place."""
    died_again: list[str] | None = None
    """Replayed messages back in the DLQ within `wait_s`; None when not watched."""
    wait_s: float = 0.0
    dry_run: bool = False

    @property
    def left(self) -> int:
        """Messages of the snapshot still in the DLQ: not selected, refused (or a dry run)."""
        return self.found - (0 if self.dry_run else len(self.replayed))


Selector = Callable[[DeadLetter], bool]


def select(
    ids: Iterable[str] = (), event_type: str | None = None, since: datetime | None = None
) -> Selector:
    """Messages with one of `ids` (all if none), of `event_type`, dead since `since`."""
    wanted = set(ids)

    def matches(letter: DeadLetter) -> bool:
        return (
            (not wanted or letter.key in wanted)
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
        """Every DLQ: count, oldest death, reasons of the last deaths."""
        summaries = []
        async with self._connection() as connection:
            channel = await connection.channel()
            for spec in self._topology.queues:
                summary = QueueSummary(dlq=spec.dlq, count=0)
                async for letter, _ in _browse(channel, spec.dlq):
                    summary.count += 1
                    summary.reasons[letter.reason or "unknown"] += 1
                    first = letter.first_death.time if letter.first_death else None
                    died = first or letter.died_at
                    if died and (summary.oldest is None or died < summary.oldest):
                        summary.oldest = died
                summaries.append(summary)
        return summaries

    async def show(self, name: str, limit: int | None = 10) -> list[DeadLetter]:
        """The first `limit` messages of a DLQ (all when None), moving nothing."""
        shown: list[DeadLetter] = []
        async with self._connection() as connection:
            channel = await connection.channel()
            async for letter, _ in _browse(channel, self.resolve(name)):
                shown.append(letter)
                if limit is not None and len(shown) >= limit:
                    break
        return shown

    async def replay(
        self,
        name: str,
        matches: Selector,
        *,
        dry_run: bool = False,
        wait_s: float = 5.0,
        on_start: Callable[[int], None] = lambda _: None,
        on_progress: Callable[[DeadLetter], None] = lambda _: None,
        on_wait: Callable[[float], None] = lambda _: None,
    ) -> ReplayReport:
        """Send the selected messages of the DLQ back, once each; watch `wait_s` for returns.

        `on_start` gets how many will be replayed (known once the DLQ has been read),
        `on_progress` each message as it leaves the DLQ, `on_wait` the seconds it will watch.
        """
        dlq = self.resolve(name)
        report = ReplayReport(dlq=dlq, wait_s=wait_s, dry_run=dry_run)
        run_id = uuid.uuid4().hex
        async with self._connection() as connection:
            snapshot_channel = await connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            snapshot = [item async for item in _browse(snapshot_channel, dlq)]
            report.found = len(snapshot)
            report.present = [letter.key for letter, _ in snapshot]
            chosen = []
            for letter, message in snapshot:
                if not matches(letter):
                    continue
                report.matched.append(letter.key)
                refusal = _refusal(letter)
                if refusal:
                    report.refused.append(f"{letter.key}: {refusal}")
                else:
                    chosen.append((letter, message))
            if dry_run:
                report.replayed = [letter.key for letter, _ in chosen]
                return report
            on_start(len(chosen))
            try:
                await self._send_back(
                    connection, snapshot_channel, chosen, report, run_id, on_progress, on_wait
                )
            except BROKER_FAILURES as exc:
                raise ReplayInterruptedError(report, exc) from exc
        # the snapshot's other messages return to the DLQ as the connection closes
        return report

    async def _send_back(
        self,
        connection: AbstractConnection,
        channel: AbstractChannel,
        chosen: list[tuple[DeadLetter, AbstractIncomingMessage]],
        report: ReplayReport,
        run_id: str,
        on_progress: Callable[[DeadLetter], None],
        on_wait: Callable[[float], None],
    ) -> None:
        watch = _Watch(run_id, report.wait_s)
        await watch.start(connection, report.dlq)
        for letter, message in chosen:
            try:
                await _republish(channel, letter, report.dlq, run_id)
            except aio_pika.exceptions.DeliveryError as exc:
                report.refused.append(f"{letter.key}: queue {letter.queue!r} refused it ({exc})")
                continue
            await message.ack()
            report.replayed.append(letter.key)
            on_progress(letter)
        if report.replayed and report.wait_s > 0:
            on_wait(report.wait_s)
        report.died_again = await watch.until(len(report.replayed))

    async def purge(self, name: str, keys: Iterable[str] | None = None) -> int:
        """Delete the messages with these keys for good (every message when None)."""
        dlq = self.resolve(name)
        wanted = None if keys is None else set(keys)
        purged = 0
        async with self._connection() as connection:
            channel = await connection.channel()
            async for letter, message in _browse(channel, dlq):
                if wanted is None or letter.key in wanted:
                    await message.ack()
                    purged += 1
        return purged

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AbstractConnection]:
        try:
            connection = await aio_pika.connect(self._url)
        except Exception as exc:
            raise DeadLetterError(f"cannot reach the broker: {exc}") from exc
        async with connection:
            try:
                yield connection
            except DeadLetterError:
                raise
            except BROKER_FAILURES as exc:
                raise DeadLetterError(f"the broker failed: {exc!r}") from exc


async def _browse(
    channel: AbstractChannel, dlq: str
) -> AsyncIterator[tuple[DeadLetter, AbstractIncomingMessage]]:
    """Every message of `dlq` once, unacknowledged (they return when the channel closes)."""
    try:
        queue = await channel.get_queue(dlq, ensure=True)
    except (aio_pika.exceptions.ChannelNotFoundEntity, aio_pika.exceptions.ChannelClosed) as exc:
        raise DeadLetterError(f"queue {dlq!r} does not exist on the broker") from exc
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        yield dead_letter(message), message


class _Watch:
    """Counts the messages of one replay run that come back into the DLQ.

    It consumes the DLQ without acknowledging anything: what it took returns to the DLQ when
    its channel closes.
    """

    def __init__(self, run_id: str, wait_s: float) -> None:
        self.run_id = run_id
        self.wait_s = wait_s
        self.back: list[str] = []
        self._expected: int | None = None
        self._all_back = asyncio.Event()

    async def start(self, connection: AbstractConnection, dlq: str) -> None:
        if self.wait_s > 0:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=0)
            queue = await channel.get_queue(dlq, ensure=False)
            await queue.consume(self._seen, no_ack=False)

    async def _seen(self, message: AbstractIncomingMessage) -> None:
        if _text(message.headers.get(REPLAY_RUN)) == self.run_id:
            self.back.append(dead_letter(message).key)
            self._check()

    def _check(self) -> None:
        if self._expected is not None and len(self.back) >= self._expected:
            self._all_back.set()

    async def until(self, replayed: int) -> list[str] | None:
        """The keys of the replayed messages back within `wait_s` (None when not watched)."""
        if self.wait_s <= 0:
            return None
        self._expected = replayed
        if replayed == 0:
            return []
        self._check()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._all_back.wait(), self.wait_s)
        return list(self.back)


REPLAYED_PROPERTIES = (
    "message_id",
    "correlation_id",
    "content_type",
    "content_encoding",
    "type",
    "timestamp",
    "priority",
    "app_id",
    "reply_to",
)
"""Properties a replay carries over (not `user_id`, which the broker checks against the login,
nor `expiration`, which may have passed)."""


def dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    """A message read from a DLQ, its deaths taken from `x-death` and our own headers."""
    properties = {
        name: value
        for name in REPLAYED_PROPERTIES
        if (value := getattr(message, name, None)) is not None
    }
    return letter_of(message.headers, message.body, properties)


def letter_of(
    headers: dict[str, Any], body: bytes, properties: dict[str, Any] | None = None
) -> DeadLetter:
    """A dead letter from its headers, body and AMQP properties."""
    properties = properties or {}
    deaths = _x_death(headers)
    last = deaths[0] if deaths else None
    first = _first_death(headers) or (min(deaths, key=_death_order) if deaths else None)
    return DeadLetter(
        message_id=_text(properties.get("message_id")),
        event_type=_text(properties.get("type")),
        queue=last.queue if last else (first.queue if first else None),
        reason=last.reason if last else None,
        deaths=_count(headers.get(DEATHS)) + sum(death.count for death in deaths),
        died_at=last.time if last else None,
        headers=dict(headers),
        body=body,
        first_death=first,
        replays=_count(headers.get(REPLAYS)),
        properties=properties,
    )


def _x_death(headers: dict[str, Any]) -> list[Death]:
    """The broker's deaths, most recent first (as RabbitMQ orders `x-death`)."""
    entries = headers.get("x-death")
    if not isinstance(entries, list):
        return []
    return [
        Death(
            reason=_text(entry.get("reason")),
            queue=_text(entry.get("queue")),
            time=_time(entry.get("time")),
            count=_count(entry.get("count")),
        )
        for entry in entries
        if isinstance(entry, dict)
    ]


def _first_death(headers: dict[str, Any]) -> Death | None:
    if FIRST_DEATH_REASON not in headers and FIRST_DEATH_QUEUE not in headers:
        return None
    return Death(
        reason=_text(headers.get(FIRST_DEATH_REASON)),
        queue=_text(headers.get(FIRST_DEATH_QUEUE)),
        time=_time(headers.get(FIRST_DEATH_TIME)),
        count=_count(headers.get(FIRST_DEATH_COUNT)),
    )


def _death_order(death: Death) -> datetime:
    return death.time or datetime.max.replace(tzinfo=UTC)


def _time(value: Any) -> datetime | None:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def _refusal(letter: DeadLetter) -> str | None:
    """Why `letter` must stay where it is, if it must."""
    if letter.queue is None:
        return "no x-death header, so no queue to return it to"
    if letter.envelope is None:
        return "not a valid event envelope; inspect it with `dlq show`, delete it with `dlq purge`"
    return None


def replay_headers(letter: DeadLetter, dlq: str, run_id: str, now: datetime) -> dict[str, Any]:
    """The headers a replayed message carries: its own, never the broker's, plus ours."""
    headers = {
        key: value
        for key, value in letter.headers.items()
        if key not in BROKER_HEADERS and not key.startswith(BROKER_HEADER_PREFIXES)
    }
    if letter.first_death is not None:
        first = letter.first_death
        headers[FIRST_DEATH_REASON] = first.reason or "unknown"
        headers[FIRST_DEATH_QUEUE] = first.queue or ""
        headers[FIRST_DEATH_TIME] = first.time.isoformat() if first.time else ""
        headers[FIRST_DEATH_COUNT] = first.count
    headers[DEATHS] = letter.deaths
    headers[REPLAYS] = letter.replays + 1
    headers[REPLAYED_AT] = now.isoformat()
    headers[REPLAY_RUN] = run_id
    headers[REPLAYED_FROM] = dlq
    return headers


async def _republish(channel: AbstractChannel, letter: DeadLetter, dlq: str, run_id: str) -> None:
    message = aio_pika.Message(
        letter.body,
        headers=replay_headers(letter, dlq, run_id, datetime.now(UTC)),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **letter.properties,
    )
    await channel.default_exchange.publish(message, routing_key=str(letter.queue), mandatory=True)


def describe(letter: DeadLetter) -> str:
    """A human-readable dump of one dead letter."""
    envelope = letter.envelope
    body = (
        json.dumps(envelope.model_dump(mode="json"), indent=2, ensure_ascii=False)
        if envelope
        else f"(not an event envelope) {letter.body[:500]!r}"
    )
    died = letter.died_at.isoformat(timespec="seconds") if letter.died_at else "?"
    headers = {
        key: value
        for key, value in letter.headers.items()
        if key not in BROKER_HEADERS and not key.startswith(BROKER_HEADER_PREFIXES)
    }
    lines = [
        f"message {letter.key}  type {letter.event_type or '-'}",
        f"  died in {letter.queue or '?'}: {letter.reason or 'unknown'} at {died}",
        f"  first death: {letter.first_death or 'unknown'}",
        f"  deaths {letter.deaths}, replays {letter.replays}",
        *([f"  headers {headers}"] if headers else []),
        body,
    ]
    return "\n".join(lines)
