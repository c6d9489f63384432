"""A service's life on the broker: declare the topology, run its relay, drain on shutdown."""

from __future__ import annotations

from collections.abc import Sequence

from faststream.rabbit import RabbitBroker

from contracts.topology import Topology
from messaging.broker import declare_topology
from messaging.relay import OutboxRelay


class ServiceLifecycle:
    """Hooks for FastStream's `on_startup`, `after_startup` and `on_shutdown`.

    Shutdown order matters: stop taking messages and let in-flight ones finish (their
    transactions commit outbox rows), then flush the outbox, and only then close the broker.
    """

    def __init__(
        self,
        broker: RabbitBroker,
        amqp_url: str,
        topology: Topology,
        relays: Sequence[OutboxRelay] = (),
    ) -> None:
        self._broker = broker
        self._amqp_url = amqp_url
        self._topology = topology
        self._relays = tuple(relays)

    async def on_startup(self) -> None:
        await declare_topology(self._amqp_url, self._topology)
        await self._broker.connect()

    async def after_startup(self) -> None:
        for relay in self._relays:
            relay.start()

    async def on_shutdown(self) -> None:
        for subscriber in self._broker.subscribers:
            await subscriber.stop()
        for relay in self._relays:
            await relay.stop()
