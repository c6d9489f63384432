"""A relay process that SIGKILLs itself after N confirmed publishes (mid-batch).

Run as `python -m support.crashing_relay` with DATABASE_URL, AMQP_URL, AMQP_NAMESPACE and
CRASH_AFTER set; used to prove that a relay killed mid-batch loses no event.
"""

from __future__ import annotations

import asyncio
import os
import signal

from contracts.envelope import RawEnvelope
from contracts.topology import build_topology
from jobs.models import DELIVERY
from messaging.broker import create_broker
from messaging.database import create_engine, create_session_factory
from messaging.publisher import EventPublisher
from messaging.relay import OutboxRelay
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings


class CrashingPublisher(EventPublisher):
    confirmed = 0

    async def publish_envelope(self, envelope: RawEnvelope, routing_key: str) -> None:
        await super().publish_envelope(envelope, routing_key)
        self.confirmed += 1
        if self.confirmed == int(os.environ["CRASH_AFTER"]):
            os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    broker_settings = BrokerSettings()
    broker = create_broker(broker_settings)
    await broker.connect()
    engine = create_engine(DatabaseSettings())
    topology = build_topology(broker_settings.namespace)
    publisher = CrashingPublisher(broker, topology.events_exchange, source="test", timeout_s=10)
    relay = OutboxRelay(
        create_session_factory(engine), DELIVERY, publisher, OutboxSettings(batch_size=20)
    )
    while (await relay.publish_pending()).published:
        pass


if __name__ == "__main__":
    asyncio.run(main())
