"""The outbox relay: publishes committed events, then marks them sent.

Two ways out, one table:

- **from memory**: whoever commits outbox rows hands the same envelopes over (`committed`);
  they are published at once, without reading them back, and their marks are written in
  batches, one autocommitted statement for everything confirmed meanwhile;
- **the sweep**: a loop reads what is still unsent after `sweep_after_s` (a crash between
  commit and publish, a failed publish, a broker outage, rows other processes wrote) in outbox
  order, publishes it and marks it, backing each failing row off on its own.

There is no global ordering guarantee (concurrent writers, retries); consumers enforce their
own transitions. A crash between publishing and marking re-publishes later; consumers
deduplicate by event id, so delivery is at-least-once on the wire and exactly-once in effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import all_, any_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.types import Uuid

from contracts.envelope import RawEnvelope
from contracts.topology import build_topology
from messaging.broker import create_broker
from messaging.metrics import OUTBOX_LAG_SECONDS, OUTBOX_UNSENT
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings, OutboxSettings
from messaging.tables import DeliveryTables
from messaging.unit_of_work import Committed

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MAX_ROW_BACKOFF_S = 300.0
PURGE_EVERY_S = 3600.0
MAX_IN_FLIGHT = 1000
"""Publishes from memory in flight at most; past it, committed rows wait for the sweep."""
MARK_EVERY_S = 0.05
"""Marks are written at most this often: under load each statement marks the confirms of
50 ms, not of the last few. A mark only keeps the sweep (seconds later) off the row."""


@dataclass(frozen=True)
class RelayPass:
    published: int
    failed: int


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tables: DeliveryTables,
        publisher: EventPublisher,
        settings: OutboxSettings,
    ) -> None:
        self._sessions = sessions
        self._outbox = tables.outbox
        self._inbox = tables.inbox
        self._publisher = publisher
        self._settings = settings
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._confirmed: list[uuid.UUID] = []
        self._confirmed_arrived = asyncio.Event()
        self._marker: asyncio.Task[None] | None = None
        outbox = self._outbox
        # Rows a sweep holds (it is publishing them too) are skipped, not waited for: the
        # sweep marks them itself.
        unmarked = (
            select(outbox.c.id)
            .where(outbox.c.id == any_(bindparam("ids", type_=ARRAY(Uuid()))))
            .where(outbox.c.published_at.is_(None))
            .with_for_update(skip_locked=True)
        )
        self._mark_published = (
            update(outbox).where(outbox.c.id.in_(unmarked)).values(published_at=func.now())
        )
        self._in_flight_ids: set[uuid.UUID] = set()

    def committed(self, rows: Iterable[Committed]) -> None:
        """Rows just committed to the outbox: publish them now, from memory.

        Never raises and never waits: a row that cannot go out now (not running, too much in
        flight, the publish fails) stays unsent in the table, and the sweep takes it.
        """
        if self._task is None or self._stopping.is_set():
            return
        for routing_key, envelope in rows:
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                return
            task = asyncio.create_task(self._publish_committed(routing_key, envelope))
            self._in_flight.add(task)
            self._in_flight_ids.add(envelope.id)
            task.add_done_callback(self._in_flight.discard)

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._outbox.name}")
        self._marker = asyncio.create_task(
            self._mark_confirmed(), name=f"outbox-marks-{self._outbox.name}"
        )

    async def stop(self) -> None:
        """Stop after publishing everything already committed."""
        self._stopping.set()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._confirmed_arrived.set()
        if self._marker is not None:
            await self._marker
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._task = self._marker = None

    async def _publish_committed(self, routing_key: str, envelope: RawEnvelope) -> None:
        try:
            await self._publisher.publish_envelope(envelope, routing_key)
        except Exception as exc:
            log.warning(
                "outbox: publishing %s %s failed (%r); the sweep retries it",
                envelope.type,
                envelope.id,
                exc,
            )
            self._in_flight_ids.discard(envelope.id)
            return
        self._confirmed.append(envelope.id)  # the sweep leaves it alone until it is marked
        self._confirmed_arrived.set()

    async def _mark_confirmed(self) -> None:
        """Mark everything confirmed since the last statement, in one autocommitted statement.

        A mark that fails (database away) is dropped: the sweep publishes those rows again
        and consumers skip the duplicates.
        """
        while True:
            await self._confirmed_arrived.wait()
            self._confirmed_arrived.clear()
            ids, self._confirmed = self._confirmed, []
            if ids:
                try:
                    async with self._sessions() as session:
                        connection = await session.connection(
                            execution_options={"isolation_level": "AUTOCOMMIT"}
                        )
                        await connection.execute(self._mark_published, {"ids": ids})
                except Exception as exc:
                    log.warning("outbox: marking %d published events failed: %r", len(ids), exc)
                self._in_flight_ids.difference_update(ids)
            if self._stopping.is_set():
                if not self._in_flight and not self._confirmed:
                    return
            else:
                await asyncio.sleep(MARK_EVERY_S)

    async def publish_pending(self, older_than_s: float = 0.0) -> RelayPass:
        """Publish one batch of due, unsent events committed at least `older_than_s` ago, and
        mark the confirmed ones sent."""
        outbox = self._outbox
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(outbox.c.id, outbox.c.routing_key, outbox.c.envelope, outbox.c.attempts)
                    .where(
                        outbox.c.published_at.is_(None),
                        or_(
                            outbox.c.next_attempt_at.is_(None),
                            outbox.c.next_attempt_at <= func.now(),
                        ),
                        outbox.c.created_at <= func.now() - timedelta(seconds=older_than_s),
                        # what this process is publishing from memory is not the sweep's
                        outbox.c.id != all_(bindparam("in_flight", type_=ARRAY(Uuid()))),
                    )
                    .order_by(outbox.c.seq)
                    .limit(self._settings.batch_size)
                    .with_for_update(skip_locked=True),
                    {"in_flight": list(self._in_flight_ids)},
                )
            ).all()
            if not rows:
                return RelayPass(published=0, failed=0)
            results = await asyncio.gather(
                *(self._publish_row(row.envelope, row.routing_key) for row in rows),
                return_exceptions=True,
            )
            sent = [row.id for row, result in zip(rows, results, strict=True) if result is None]
            if sent:
                await session.execute(
                    update(outbox).where(outbox.c.id.in_(sent)).values(published_at=func.now())
                )
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    await self._back_off(session, row.id, row.routing_key, row.attempts, result)
            return RelayPass(published=len(sent), failed=len(rows) - len(sent))

    async def _publish_row(self, envelope: dict[str, object], routing_key: str) -> None:
        await self._publisher.publish_envelope(RawEnvelope.model_validate(envelope), routing_key)

    async def _back_off(
        self,
        session: AsyncSession,
        row_id: object,
        routing_key: str,
        attempts: int,
        error: BaseException,
    ) -> None:
        """A failing row waits its own, growing turn; the rows behind it go on meanwhile.

        It is never dropped: past `MAX_ROW_BACKOFF_S` it is retried at that interval until
        it goes out (or an operator deals with it), and every failure is logged.
        """
        delay = min(self._settings.poll_interval_s * 2**attempts, MAX_ROW_BACKOFF_S)
        log.error(
            "outbox: publishing event %s to %r failed (attempt %d, next in %.0fs): %r",
            row_id,
            routing_key,
            attempts + 1,
            delay,
            error,
        )
        outbox = self._outbox
        await session.execute(
            update(outbox)
            .where(outbox.c.id == row_id)
            .values(
                attempts=outbox.c.attempts + 1,
                last_error=repr(error)[:2000],
                next_attempt_at=func.now() + timedelta(seconds=delay),
            )
        )

    async def observe(self) -> None:
        """Update the outbox gauges: how many events wait, and for how long the oldest has."""
        outbox = self._outbox
        async with self._sessions() as session:
            unsent, oldest = (
                await session.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.published_at.is_(None)
                    )
                )
            ).one()
            now = (await session.execute(select(func.now()))).scalar_one()
        owner = self._outbox.name.removesuffix("_outbox")
        OUTBOX_UNSENT.labels(owner).set(unsent)
        OUTBOX_LAG_SECONDS.labels(owner).set((now - oldest).total_seconds() if oldest else 0.0)

    async def purge_old(self) -> None:
        """Forget published events and inbox marks past the retention period."""
        horizon = func.now() - timedelta(days=self._settings.retention_days)
        async with self._sessions() as session, session.begin():
            await session.execute(delete(self._outbox).where(self._outbox.c.published_at < horizon))
            await session.execute(delete(self._inbox).where(self._inbox.c.received_at < horizon))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._settings.poll_interval_s
        next_purge = loop.time()
        while True:
            if loop.time() >= next_purge:
                await self._purge_quietly()
                next_purge = loop.time() + PURGE_EVERY_S
            stopping = self._stopping.is_set()
            self._wakeup.clear()
            # Rows handed over are on their way from memory; the sweep leaves them that long.
            older_than_s = 0.0 if stopping else self._settings.sweep_after_s
            try:
                result = await self.publish_pending(older_than_s)
            except Exception:
                log.exception("outbox %s: relay pass failed", self._outbox.name)
                result = RelayPass(published=0, failed=1)
            # Unconfirmed rows stay in the outbox and are retried, backing off while it lasts.
            backoff = (
                min(backoff * 2, MAX_BACKOFF_S) if result.failed else self._settings.poll_interval_s
            )
            if stopping and (result.published == 0 or result.failed):
                return
            if stopping or result.published == self._settings.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=backoff)

    async def _purge_quietly(self) -> None:
        try:
            await self.purge_old()
        except Exception:
            log.exception("outbox %s: purge failed", self._outbox.name)


async def publish_outbox(
    sessions: async_sessionmaker[AsyncSession], tables: DeliveryTables, *, source: str
) -> bool:
    """Publish everything unsent in `tables`' outbox now, for a process that is no service
    (a CLI command): True when it all went out; False (logged) when some could not go out now:
    the running service's relay sweep publishes those later."""
    settings = BrokerSettings()
    broker = create_broker(settings)
    try:
        async with asyncio.timeout(settings.publish_timeout_s):
            await broker.connect()
            publisher = EventPublisher(
                broker,
                build_topology(settings.namespace).events_exchange,
                source=source,
                timeout_s=settings.publish_timeout_s,
            )
            relay = OutboxRelay(sessions, tables, publisher, OutboxSettings())
            while (passed := await relay.publish_pending()).published and not passed.failed:
                pass
            if passed.failed:
                log.warning("%d of %s's events could not be published now", passed.failed, source)
                return False
    except Exception as exc:
        log.warning("publishing %s's outbox failed: %r", source, exc)
        return False
    finally:
        await broker.stop()
    return True
