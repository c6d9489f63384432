"""Publishing envelopes with publisher confirms, persistence and mandatory routing."""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitBroker, RabbitExchange

from contracts.envelope import Envelope, Event, RawEnvelope, new_envelope
from messaging.metrics import EVENTS_PUBLISHED, PUBLISH_FAILURES


class EventPublisher:
    """Publishes to the events exchange; an unroutable or unconfirmed message raises."""

    def __init__(
        self, broker: RabbitBroker, exchange: str, *, source: str, timeout_s: float
    ) -> None:
        self._broker = broker
        self._exchange = RabbitExchange(exchange, declare=False)
        self._source = source
        self._timeout_s = timeout_s

    async def publish(self, event: Event, *, cause: Envelope[Any] | None = None) -> RawEnvelope:
        """Publish directly, for services with no database of their own (gateway, runner)."""
        envelope = new_envelope(event, source=self._source, cause=cause)
        await self.publish_envelope(envelope, event.routing_key())
        return envelope

    async def publish_envelope(self, envelope: RawEnvelope, routing_key: str) -> None:
        try:
            await self._send(envelope, routing_key)
        except Exception:
            PUBLISH_FAILURES.labels(self._source, routing_key).inc()
            raise
        EVENTS_PUBLISHED.labels(self._source, routing_key).inc()

    async def _send(self, envelope: RawEnvelope, routing_key: str) -> None:
        await self._broker.publish(
            envelope.model_dump_json().encode(),
            exchange=self._exchange,
            routing_key=routing_key,
            mandatory=True,
            persist=True,
            timeout=self._timeout_s,
            message_id=str(envelope.id),
            correlation_id=envelope.correlation_id,
            content_type="application/json",
            message_type=envelope.type,
            timestamp=envelope.time,
            headers={"x-event-version": envelope.version, "x-source": envelope.source},
        )
