"""Consuming one service queue: validate, route by event type, settle the message.

- malformed JSON, a wrong schema, an unknown type or version, an event nobody here handles:
  rejected without requeue, so the queue dead-letters it at once, with a log line naming why;
- a handler that raises: the message is rejected with requeue after a backoff, which counts
  towards the queue's delivery limit; past it the queue dead-letters the message;
- a handler that hits trouble which is no fault of the message (lost database or broker
  connection, deadlock, serialization failure): retried in process, with backoff, for up to
  `transient_retry_s`, so an outage does not burn a healthy message's delivery limit;
- success: acknowledged only after the handler (and its transaction) finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from contracts.envelope import Event, RawEnvelope, UnknownEventError, open_envelope
from contracts.events import CATALOG
from messaging.logs import handling
from messaging.metrics import HANDLER_SECONDS, MESSAGES_CONSUMED
from messaging.unit_of_work import AlreadyHandled, UnitOfWork

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
EnvelopeHandler = Callable[[Any, RawEnvelope], Awaitable[bool | None]]
"""Returns False when the message was a duplicate and changed nothing."""
UnitOfWorkHandler = Callable[[Any, UnitOfWork], Awaitable[None]]


class MalformedMessageError(ValueError):
    """A message that can never be processed, whatever the retry."""


class EventConsumer:
    """Routes the events of one queue to handlers taking `(event, envelope)`."""

    def __init__(
        self,
        queue: str,
        *,
        retry_backoff_s: float = 0.5,
        retry_backoff_max_s: float = 10.0,
        transient_retry_s: float = 300.0,
    ) -> None:
        self.queue = queue
        self._handlers: dict[type[Event], EnvelopeHandler] = {}
        self._backoff_s = retry_backoff_s
        self._backoff_max_s = retry_backoff_max_s
        self._transient_retry_s = transient_retry_s

    @property
    def handled(self) -> tuple[type[Event], ...]:
        return tuple(self._handlers)

    def on(self, event_type: type[E]) -> Callable[[Callable[[E, Any], Awaitable[None]]], Any]:
        """Register the one handler of `event_type`."""

        def register(handler: Callable[[E, Any], Awaitable[None]]) -> Any:
            if event_type in self._handlers:
                raise ValueError(f"{event_type.__name__} already has a handler on {self.queue}")
            self._handlers[event_type] = self._wrap(handler)
            return handler

        return register

    def superseded(self, *event_types: type[Event]) -> None:
        """Older versions published beside a newer one that this queue's handlers act on
        (docs/subscribing.md §4): each copy is acknowledged without acting, nothing written."""
        for event_type in event_types:
            if event_type in self._handlers:
                raise ValueError(f"{event_type.__name__} already has a handler on {self.queue}")
            self._handlers[event_type] = _acknowledge

    def _wrap(self, handler: Callable[[Any, Any], Awaitable[None]]) -> EnvelopeHandler:
        return handler

    async def __call__(self, message: RabbitMessage) -> None:
        """The FastStream subscriber: settles every message it is given, never raises."""
        try:
            envelope, event = self.decode(message.body)
            handler = self._handlers.get(type(event))
            if handler is None:
                raise MalformedMessageError(f"no handler for {envelope.type!r} on {self.queue}")
        except MalformedMessageError as exc:
            with handling(correlation_id=message.correlation_id, event_id=message.message_id):
                log.error(
                    "dead-lettering message %s from %s: %s", message.message_id, self.queue, exc
                )
            MESSAGES_CONSUMED.labels(self.queue, "malformed", "dead_letter").inc()
            await message.reject(requeue=False)
            return
        with handling(
            correlation_id=envelope.correlation_id,
            event_id=str(envelope.id),
            event_type=envelope.type,
        ):
            await self._settle(message, handler, event, envelope)

    async def _settle(
        self,
        message: RabbitMessage,
        handler: EnvelopeHandler,
        event: Event,
        envelope: RawEnvelope,
    ) -> None:
        started = time.perf_counter()
        try:
            applied = await self._handle(handler, event, envelope)
        except asyncio.CancelledError:
            raise
        except Exception:
            deliveries = _delivery_count(message)
            log.exception(
                "handling %s %s from %s failed (delivery %d); returning it to the queue",
                envelope.type,
                envelope.id,
                self.queue,
                deliveries,
            )
            MESSAGES_CONSUMED.labels(self.queue, envelope.type, "retry").inc()
            await asyncio.sleep(min(self._backoff_s * 2 ** (deliveries - 1), self._backoff_max_s))
            await message.reject(requeue=True)
            return
        HANDLER_SECONDS.labels(self.queue, envelope.type).observe(time.perf_counter() - started)
        outcome = "duplicate" if applied is False else "ok"
        MESSAGES_CONSUMED.labels(self.queue, envelope.type, outcome).inc()
        await message.ack()

    async def _handle(
        self, handler: EnvelopeHandler, event: Event, envelope: RawEnvelope
    ) -> bool | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._transient_retry_s
        delay = max(self._backoff_s, 0.05)
        while True:
            try:
                return await handler(event, envelope)
            except Exception as exc:
                if not is_transient(exc) or loop.time() + delay > deadline:
                    raise
                log.warning(
                    "handling %s %s hit %r; retrying in %.1fs",
                    envelope.type,
                    envelope.id,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(self._backoff_max_s, delay))

    @staticmethod
    def decode(body: bytes) -> tuple[RawEnvelope, Event]:
        try:
            envelope = RawEnvelope.model_validate_json(body)
        except ValidationError as exc:
            raise MalformedMessageError(f"invalid envelope: {_describe(exc)}") from exc
        try:
            return envelope, open_envelope(envelope, CATALOG)
        except UnknownEventError as exc:
            raise MalformedMessageError(str(exc)) from exc
        except ValidationError as exc:
            raise MalformedMessageError(
                f"invalid {envelope.type} v{envelope.version} payload: {_describe(exc)}"
            ) from exc


class TransactionalConsumer(EventConsumer):
    """Handlers take `(event, unit_of_work)`: one unit of work per message, which marks the
    message handled when it commits; a message handled already changes nothing."""

    def __init__(
        self, queue: str, unit_of_work: Callable[[RawEnvelope], UnitOfWork], **backoff: float
    ) -> None:
        super().__init__(queue, **backoff)
        self._unit_of_work = unit_of_work

    def _wrap(self, handler: UnitOfWorkHandler) -> EnvelopeHandler:
        async def in_unit_of_work(event: Event, envelope: RawEnvelope) -> bool:
            try:
                async with self._unit_of_work(envelope) as uow:
                    await handler(event, uow)
                    await uow.commit()
            except AlreadyHandled:
                log.info("skipping duplicate %s %s on %s", envelope.type, envelope.id, self.queue)
                return False
            return True

        return in_unit_of_work


TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})
"""Serialization failure, deadlock, admin/crash shutdown, cannot connect now, too many clients."""


STALE_PLAN = "InvalidCachedStatementError"
"""SQLAlchemy's asyncpg dialect's error for a cached statement whose table changed (a migration
altered a column under a running process); the dialect has dropped its caches by then, so the
next try prepares the statement anew."""


def is_transient(error: BaseException) -> bool:
    """Trouble that is no fault of the message: another try, a moment later, may succeed."""
    if isinstance(error, PoolTimeoutError):  # every connection busy: wait for one, later
        return True
    if isinstance(error, DBAPIError):
        sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return (
            error.connection_invalidated
            or sqlstate in TRANSIENT_SQLSTATES
            or type(error.orig).__name__ == STALE_PLAN
        )
    # a channel closed under us (a broker restart) raises ChannelInvalidStateError, which
    # aiormq derives from RuntimeError, not from its AMQP errors
    return isinstance(
        error,
        (ConnectionError, TimeoutError, OSError, AMQPConnectionError, ChannelInvalidStateError),
    )


async def _acknowledge(event: Event, envelope: RawEnvelope) -> None:
    """A superseded version's copy: its newer copy is the one acted on."""


def _delivery_count(message: RabbitMessage) -> int:
    """1 on first delivery; quorum queues count returns in `x-delivery-count`."""
    count = message.headers.get("x-delivery-count", 0)
    return (count if isinstance(count, int) else 0) + 1


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, item['loc'])) or 'body'}: {item['msg']}" for item in error.errors()[:5]
    )
