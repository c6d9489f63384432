"""Playing the jobs service's neighbours on the real broker: the gateway's requests, billing's
debits, the runners' reports; and watching every event of a test's namespace."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Envelope, Event, RawEnvelope, open_envelope
from contracts.events import (
    CATALOG,
    BalanceDebited,
    JobAttemptFailed,
    JobCancelRequested,
    JobCompleted,
    JobCreated,
    JobDispatchedV1,
    JobRequested,
    JobRequestedV1,
    JobStarted,
)
from contracts.topology import Topology
from jobs.domain import credits
from jobs.settings import JobsSettings
from messaging.publisher import EventPublisher

E = TypeVar("E", bound=Event)
EDIT_IMAGE = "uploads/photo.jpg"


class EventLog:
    """Every event on the namespace's exchange, through a queue of the test's own."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self._amqp_url = amqp_url
        self._topology = topology
        self._connection: AbstractRobustConnection | None = None
        self.received: list[tuple[Envelope[Any], Event]] = []

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self._amqp_url)
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await channel.get_exchange(self._topology.events_exchange, ensure=False)
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self._record, no_ack=True)

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _record(self, message: AbstractIncomingMessage) -> None:
        envelope = RawEnvelope.model_validate_json(message.body)
        self.received.append((envelope, open_envelope(envelope, CATALOG)))

    def of(self, event_type: type[E], **match: Any) -> list[E]:
        return [
            event
            for _, event in self.received
            if type(event) is event_type  # exactly: JobRequested v2 subclasses v1
            and all(getattr(event, name) == value for name, value in match.items())
        ]

    async def wait_for(
        self, event_type: type[E], count: int = 1, timeout_s: float = 15.0, **match: Any
    ) -> list[E]:
        """The first `count` events of the type matching `match`, once that many arrived."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found := self.of(event_type, **match)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} {event_type.__name__} {match} in {timeout_s}s; "
                    f"seen: {[type(event).__name__ for _, event in self.received]}"
                )
            await asyncio.sleep(0.02)
        return found[:count]


class JobsPlayer:
    """Publishes what the gateway, billing and the runners would, and waits for jobs' answers.

    User n has telegram id and chat id 1000 + n (see the jobs tests' users rows).
    """

    def __init__(
        self,
        publisher: EventPublisher,
        events: EventLog,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.publisher = publisher
        self.events = events
        self._sessions = sessions

    async def price_shown(self, preset_id: int | None) -> int:
        """What the gateway would show and the user confirm: the catalog's price right now
        (for a prompt, the default custom price: a test that configures another passes
        `price` itself)."""
        if preset_id is None:
            return JobsSettings().custom_prompt_price
        async with self._sessions() as session:
            price = await session.scalar(
                text("SELECT price FROM presets WHERE id = :id"), {"id": preset_id}
            )
        return credits(price)

    async def publish(self, event: Event) -> RawEnvelope:
        return await self.publisher.publish(event)

    async def request(
        self,
        user_id: int,
        *,
        preset_id: int | None = None,
        prompt: str | None = None,
        image_key: str | None = EDIT_IMAGE,
        image_keys: list[str] | None = None,
        request_id: uuid.UUID | None = None,
        price: int | None = None,
        confirmed: bool = True,
    ) -> uuid.UUID:
        """JobRequested (v3) at the confirmed `price` (by default the catalog's now), on
        `image_key` or an album's `image_keys`; with `confirmed=False`, v1, which names no price
        (as gateways before v2 ask)."""
        request_id = request_id or uuid.uuid4()
        fields: dict[str, Any] = {
            "request_id": request_id,
            "user_id": user_id,
            "telegram_id": 1000 + user_id,
            "chat_id": 1000 + user_id,
            "preset_id": preset_id,
            "prompt": prompt,
        }
        if not confirmed:
            await self.publish(JobRequestedV1(**fields, image_key=image_key))
            return request_id
        if price is None:
            price = await self.price_shown(preset_id)
        images = image_keys if image_keys is not None else [image_key] if image_key else []
        await self.publish(JobRequested(**fields, image_keys=images, price=price))
        return request_id

    async def submit(self, user_id: int, **request: Any) -> JobCreated:
        request_id = await self.request(user_id, **request)
        (created,) = await self.events.wait_for(JobCreated, request_id=request_id)
        return created

    async def pay(self, created: JobCreated) -> None:
        await self.publish(
            BalanceDebited(
                job_id=created.job_id, user_id=created.user_id, amount=created.price, balance=500
            )
        )

    async def submit_paid(self, user_id: int, **request: Any) -> JobCreated:
        created = await self.submit(user_id, **request)
        await self.pay(created)
        return created

    async def dispatched(self, job_id: int, attempt: int = 1) -> JobDispatchedV1:
        (dispatched,) = await self.events.wait_for(JobDispatchedV1, job_id=job_id, attempt=attempt)
        return dispatched

    async def start(self, job_id: int, attempt: int = 1) -> RawEnvelope:
        return await self.publish(
            JobStarted(job_id=job_id, attempt=attempt, runner_id="runner-1", total_steps=8)
        )

    async def complete(self, job_id: int, attempt: int = 1) -> RawEnvelope:
        return await self.publish(
            JobCompleted(
                job_id=job_id,
                attempt=attempt,
                result_key=f"results/{job_id}-{attempt}.png",
                duration_ms=1500,
                seed=7,
            )
        )

    async def fail(self, job_id: int, attempt: int, *, retryable: bool = True) -> RawEnvelope:
        return await self.publish(
            JobAttemptFailed(
                job_id=job_id,
                attempt=attempt,
                retryable=retryable,
                reason="out_of_memory" if retryable else "unreadable_image",
                detail="CUDA out of memory" if retryable else "not an image",
            )
        )

    async def cancel(self, job_id: int, user_id: int) -> RawEnvelope:
        return await self.publish(
            JobCancelRequested(job_id=job_id, user_id=user_id, chat_id=1000 + user_id)
        )
