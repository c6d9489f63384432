"""A service's life on the broker: declare the topology, run its loops, drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream.rabbit import RabbitBroker

from contracts.topology import Topology
from messaging.broker import declare_topology
from messaging.faststream_internals import cancel_consumer
from messaging.relay import OutboxRelay

__all__ = ["Periodic", "ServiceLifecycle"]

log = logging.getLogger(__name__)


class Periodic:
    """Runs `job` every `interval_s` until stopped; a failing run is logged, never fatal."""

    def __init__(self, name: str, interval_s: float, job: Callable[[], Awaitable[Any]]) -> None:
        self.name = name
        self._interval_s = interval_s
        self._job = job
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Let a run in progress finish, then stop."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._job()
            except Exception:
                log.exception("periodic %s failed; next run in %.1fs", self.name, self._interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval_s)


class ServiceLifecycle:
    """Hooks for FastStream's `on_startup`, `after_startup` and `on_shutdown`.

    Shutdown order matters: cancel the consumers first, so the broker sends nothing more while
    in-flight messages finish (a message dropped during the drain would come back with one more
    delivery counted); stop the periodic loops; flush the outbox; only then close the broker.
    """

    def __init__(
        self,
        broker: RabbitBroker,
        amqp_url: str,
        topology: Topology,
        relays: Sequence[OutboxRelay] = (),
        periodic: Sequence[Periodic] = (),
        draining: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self._broker = broker
        self._amqp_url = amqp_url
        self._topology = topology
        self._relays = tuple(relays)
        self._periodic = tuple(periodic)
        self._draining = tuple(draining)

    async def on_startup(self) -> None:
        await declare_topology(self._amqp_url, self._topology)
        await self._broker.connect()

    async def after_startup(self) -> None:
        for relay in self._relays:
            relay.start()
        for loop in self._periodic:
            loop.start()

    async def on_shutdown(self) -> None:
        for subscriber in self._broker.subscribers:
            await cancel_consumer(subscriber)  # FastStream's stop() cancels only after the drain
        for subscriber in self._broker.subscribers:
            await subscriber.stop()
        for drain in self._draining:  # other work in hand (a bot's updates) ends here
            await drain()
        for loop in self._periodic:
            await loop.stop()
        for relay in self._relays:
            await relay.stop()
