"""Broker construction, topology declaration and subscription of consumers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import aio_pika
from faststream import AckPolicy
from faststream.rabbit import (
    Channel,
    QueueType,
    RabbitBroker,
    RabbitQueue,
)
from faststream.rabbit.annotations import RabbitMessage

from contracts.topology import DLQ_ARGUMENTS, RPC_ARGUMENTS, QueueSpec, Topology
from messaging.consumer import EventConsumer
from messaging.settings import BrokerSettings

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import QuorumQueueArgs


def create_broker(settings: BrokerSettings, *, graceful_timeout_s: float = 30.0) -> RabbitBroker:
    """Publisher confirms on, and an unroutable mandatory publish raises instead of vanishing."""
    return RabbitBroker(
        settings.url.get_secret_value(),
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        graceful_timeout=graceful_timeout_s,
        # Our subscribers take the raw message (see `keep_message`) and validate it
        # themselves; FastDepends would resolve that parameter in a worker thread, a thread
        # hop per message.
        apply_types=False,
        # FastStream logs "Received"/"Processed" per message: two lines per message at INFO
        # were a good part of a busy service's CPU. They stay available at DEBUG, in our format
        # (the root handler); failures are logged by our consumer at WARNING/ERROR anyway.
        logger=logging.getLogger("faststream.access.rabbit"),
        log_level=logging.DEBUG,
    )


async def keep_message(message: RabbitMessage) -> RabbitMessage:
    """A decoder that hands the subscriber the message itself: body, headers, ack, reject."""
    return message


def rabbit_queue(spec: QueueSpec) -> RabbitQueue:
    return _quorum_queue(spec.name, spec.arguments)


def _quorum_queue(name: str, arguments: dict[str, Any]) -> RabbitQueue:
    return RabbitQueue(
        name, queue_type=QueueType.QUORUM, arguments=cast("QuorumQueueArgs", arguments)
    )


async def declare_topology(amqp_url: str, topology: Topology) -> None:
    """Declare every exchange, queue and binding; idempotent, so each service does it at start.

    Uses a connection of its own: FastStream caches declared queues per name, so declaring them
    on the broker's default channel would hand subscribers that channel without their prefetch.
    """
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        events = await channel.declare_exchange(
            topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dlx = await channel.declare_exchange(
            topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        for spec in topology.queues:
            queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
            for routing_key in spec.routing_keys:
                await queue.bind(events, routing_key=routing_key)
            dlq = await channel.declare_queue(spec.dlq, durable=True, arguments=DLQ_ARGUMENTS)
            await dlq.bind(dlx, routing_key=spec.name)
        for name in topology.rpc_queues:
            await channel.declare_queue(name, durable=True, arguments=RPC_ARGUMENTS)


async def delete_topology(amqp_url: str, topology: Topology) -> None:
    """Delete every queue (with its messages) and exchange of the namespace; for throwaways."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for spec in topology.queues:
            for name in (spec.name, spec.dlq):
                await channel.queue_delete(name)
        for name in topology.rpc_queues:
            await channel.queue_delete(name)
        for exchange in (topology.events_exchange, topology.dead_letter_exchange):
            await channel.exchange_delete(exchange)


def subscribe(
    broker: RabbitBroker, spec: QueueSpec, consumer: EventConsumer, prefetch: int
) -> None:
    """Attach `consumer` to its queue; it acknowledges each message itself."""
    broker.subscriber(
        rabbit_queue(spec),
        channel=Channel(prefetch_count=prefetch),
        ack_policy=AckPolicy.MANUAL,
        decoder=keep_message,
        no_reply=True,
        title=spec.name,
    )(consumer.__call__)
