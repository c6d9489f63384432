"""The common case of the events every job brings, each in one short bare transaction.

JobRequested, BalanceDebited, JobStarted and JobCompleted carry each job through jobs. The
consumer tries these first (see `messaging.consumer.TransactionalConsumer`): the inbox mark
shares a statement with the owner's lock (with the move itself for JobStarted, which needs no
lock: one statement in all), JobCreated is written in the statement that makes the job, and
there is no ORM session. They take only the common case: a new request the domain
accepts, the debit of a job that awaits it, the start of the attempt just dispatched, the result
of the attempt running. Anything else (a duplicate, a refusal, an unknown user, a job elsewhere,
a stale attempt) rolls back and returns False, and the use cases of `jobs.lifecycle` handle the
message as they always do.

The decisions are still the domain's: a fast path asks it about the facts it expects, and the
statement that applies the move checks, in its WHERE clause, that those are the facts.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts.envelope import Event, RawEnvelope, new_envelope
from contracts.events import BalanceDebited, JobCompleted, JobStarted, JobSucceeded
from jobs import domain
from jobs.dispatcher import correlation
from jobs.domain import JobFacts, Order, Stage
from jobs.lifecycle import FOREIGN_KEY_VIOLATION, AnyJobRequested, JobLifecycle
from jobs.repository import NOW, FromNow, JobsRepository, NewJob, Outgoing
from messaging.runtime import ServiceRuntime

AWAITING_PAYMENT = JobFacts(stage=Stage.awaiting_payment, retry_count=0)
"""Where a debited job is, as a rule: billing debits once, right after JobCreated."""


class BareUnit:
    """A transaction on a connection of its own: the fast paths' unit of work.

    Like `messaging.unit_of_work.UnitOfWork` it rolls back unless committed, and the events
    emitted into it reach the outbox in the commit, and the relay then publishes them.
    """

    def __init__(self, runtime: ServiceRuntime, connection: AsyncConnection, cause: RawEnvelope):
        self._runtime = runtime
        self.connection = connection
        self.cause = cause
        self._pending: list[dict[str, Any]] = []
        self._committing: list[tuple[str, RawEnvelope]] = []

    def envelope(self, event: Event, *, correlation_id: str | None = None) -> RawEnvelope:
        """`event` wrapped as caused by this unit's event, for a statement to write itself."""
        envelope = new_envelope(
            event, source=self._runtime.name, cause=self.cause, correlation_id=correlation_id
        )
        self._committing.append((event.routing_key(), envelope))
        return envelope

    def emit(self, event: Event, *, correlation_id: str | None = None) -> RawEnvelope:
        envelope = self.envelope(event, correlation_id=correlation_id)
        self._pending.append(
            {
                "id": envelope.id,
                "routing_key": event.routing_key(),
                "envelope": envelope.model_dump(mode="json"),
            }
        )
        return envelope

    async def commit(self) -> None:
        if self._pending:
            await self.connection.execute(self._runtime.tables.outbox.insert(), self._pending)
        await self.connection.commit()
        self._runtime.relay.committed(self._committing)


class FastPaths:
    def __init__(self, lifecycle: JobLifecycle, runtime: ServiceRuntime) -> None:
        self._lifecycle = lifecycle
        self._runtime = runtime

    @asynccontextmanager
    async def _unit(self, cause: RawEnvelope) -> AsyncIterator[BareUnit]:
        async with self._runtime.engine.connect() as connection:
            await connection.begin()
            try:
                yield BareUnit(self._runtime, connection, cause)
            finally:
                if connection.in_transaction():
                    await connection.rollback()

    async def request(self, event: AnyJobRequested, cause: RawEnvelope) -> bool:
        """A new request the domain accepts: the job, its transition and JobCreated."""
        async with self._unit(cause) as unit:
            repository = JobsRepository(unit.connection)
            if not await repository.claim_and_lock_user(cause, event.user_id):
                return False
            state = await repository.request_state(event.request_id, event.user_id, event.preset_id)
            if state.existing_job is not None:
                return False
            order = self._lifecycle.decide(event, state, cause.time)
            if not isinstance(order, Order):
                return False
            created = self._lifecycle.created(event, order, state.next_job_id)
            announce = Outgoing(
                unit.envelope(created, correlation_id=str(event.request_id)),
                created.routing_key(),
            )
            new_job = self._lifecycle.new_job(event, order, state)
            if await _insert(repository, new_job, cause.id, announce) is None:
                return False
            await unit.commit()
        return True

    async def paid(self, event: BalanceDebited, cause: RawEnvelope) -> bool:
        """The debit of a job awaiting it: the job waits, and goes out if its owner has room."""
        async with self._unit(cause) as unit:
            repository = JobsRepository(unit.connection)
            owner = await repository.claim_and_lock_owner(cause, event.job_id)
            if owner is None:
                return False
            move = domain.on_paid(AWAITING_PAYMENT)
            if move is None or not await repository.move(
                event.job_id,
                AWAITING_PAYMENT,
                move.to,
                reason=move.reason,
                event_id=cause.id,
                debited_at=NOW,
                deadline_at=None,
            ):
                return False
            await self._lifecycle.dispatcher.dispatch_user(repository, unit, owner)
            await unit.commit()
        return True

    async def started(self, event: JobStarted, cause: RawEnvelope) -> bool:
        """The start of the attempt just dispatched: the job is processing, on a deadline.

        One autocommitted statement, without the owner's lock: a start changes nothing the
        lock guards (the owner's jobs in flight stay as many, none is dispatched), and the
        statement moves the job only while it is still as dispatched."""
        running = JobFacts(stage=Stage.dispatched, retry_count=event.attempt - 1)
        move = domain.on_started(running, event.attempt)
        if move is None:
            return False
        async with self._runtime.autocommit.connect() as connection:
            moved = await JobsRepository(connection).move(
                event.job_id,
                running,
                move.to,
                reason=move.reason,
                event_id=cause.id,
                claiming=cause,
                started_at=NOW,
                deadline_at=FromNow(self._lifecycle.settings.processing_timeout_s),
            )
        return moved is not None

    async def completed(self, event: JobCompleted, cause: RawEnvelope) -> bool:
        """The result of the attempt running: the job is done, JobSucceeded says so, and the
        owner's next job takes the slot."""
        running = JobFacts(stage=Stage.processing, retry_count=event.attempt - 1)
        async with self._unit(cause) as unit:
            repository = JobsRepository(unit.connection)
            owner = await repository.claim_and_lock_owner(cause, event.job_id)
            if owner is None:
                return False
            move = domain.on_completed(running, event.attempt)
            moved = None
            if move is not None:
                moved = await repository.move(
                    event.job_id,
                    running,
                    move.to,
                    reason=move.reason,
                    event_id=cause.id,
                    result_path=event.result_key,
                    duration_ms=event.duration_ms,
                    finished_at=NOW,
                    deadline_at=None,
                    next_attempt_at=None,
                    error=None,
                )
            if moved is None:
                return False
            unit.emit(
                JobSucceeded(
                    job_id=moved.id,
                    user_id=moved.user_id,
                    chat_id=moved.chat_id or 0,
                    attempt=event.attempt,
                    result_key=event.result_key,
                    duration_ms=event.duration_ms,
                ),
                correlation_id=correlation(moved),
            )
            await self._lifecycle.dispatcher.dispatch_user(repository, unit, owner)
            await unit.commit()
        return True


async def _insert(
    repository: JobsRepository, new_job: NewJob, cause: uuid.UUID, announce: Outgoing
) -> int | None:
    """The job's id; None for an unknown user (the legacy foreign key) or a repeated request."""
    try:
        return await repository.insert_job(new_job, cause, announce)
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) != FOREIGN_KEY_VIOLATION:
            raise
        return None
