"""Running the gpu_runner against the test's broker namespace, and watching what it reports."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import uvicorn
from PIL import Image

from contracts.envelope import Event, RawEnvelope, new_envelope
from contracts.events import AnyJobDispatched
from contracts.topology import Topology
from gpu_runner.app import Settings as RunnerApp
from gpu_runner.app import create_app
from gpu_runner.settings import RunnerSettings
from gpu_runner.workflows import Workflow
from messaging.broker import create_broker, declare_topology
from messaging.settings import BrokerSettings, ServiceSettings
from object_store import StorageSettings
from support.database import ROOT
from support.messaging import publisher_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def png(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


async def _healthy(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


@asynccontextmanager
async def serving_runner(
    amqp_url: str,
    topology: Topology,
    objects: Path,
    settings: RunnerSettings,
    *,
    workflows: Mapping[str, Workflow] | None = None,
) -> AsyncIterator[None]:
    """The runner app served in this process until the block ends (graceful shutdown)."""
    port = free_port()
    app = create_app(
        RunnerApp(
            runner=settings,
            storage=StorageSettings(local_root=objects),
            broker=BrokerSettings(url=amqp_url, namespace=topology.namespace),  # type: ignore[arg-type]
            service=ServiceSettings(http_port=port, graceful_timeout_s=5),
        ),
        workflows=workflows,
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(600):
            if await _healthy(port):
                break
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("runner did not become healthy")
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)


def runner_process_env(
    amqp_url: str, topology: Topology, objects: Path, **settings: Any
) -> dict[str, str]:
    """Environment for `imagebot run gpu_runner` in a subprocess on the test's namespace."""
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT / 'src'}",
        "AMQP_URL": amqp_url,
        "AMQP_NAMESPACE": topology.namespace,
        "STORAGE_LOCAL_ROOT": str(objects),
        "SERVICE_HTTP_PORT": str(free_port()),
        "SERVICE_HTTP_HOST": "127.0.0.1",
        **{key.upper(): str(value) for key, value in settings.items()},
    }


IMAGEBOT = str(Path(sys.executable).parent / "imagebot")


async def publish(amqp_url: str, topology: Topology, *events: Event) -> list[RawEnvelope]:
    await declare_topology(amqp_url, topology)
    broker = create_broker(BrokerSettings(url=amqp_url))  # type: ignore[arg-type]
    await broker.connect()
    try:
        publisher = publisher_for(broker, topology)
        sent = []
        for event in events:
            # as jobs does: every event about a job carries the job's request id
            envelope = new_envelope(event, source="jobs", correlation_id=request_of(event))
            await publisher.publish_envelope(envelope, event.routing_key())
            sent.append(envelope)
        return sent
    finally:
        await broker.stop()


def request_of(event: Event) -> str | None:
    job_id = getattr(event, "job_id", None)
    return f"request-{job_id}" if job_id is not None else None


async def publish_raw(amqp_url: str, routing_key: str, body: bytes, topology: Topology) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(topology.events_exchange, ensure=False)
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=routing_key,
            mandatory=True,
        )


def dispatched_envelope(job: AnyJobDispatched) -> RawEnvelope:
    return new_envelope(job, source="test")


class Reports:
    """Everything the runner published, read from the jobs and bot_gateway service queues."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self._url = amqp_url
        self._queues = (
            topology.service_queues["jobs"].name,
            topology.service_queues["bot_gateway"].name,
        )
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self._ids: set[str] = set()

    async def take(self) -> None:
        connection = await aio_pika.connect(self._url)
        async with connection:
            channel = await connection.channel()
            for name in self._queues:
                queue = await channel.get_queue(name, ensure=False)
                while (message := await queue.get(no_ack=True, fail=False)) is not None:
                    envelope = RawEnvelope.model_validate_json(message.body)
                    key = f"{name}:{envelope.id}"
                    if key not in self._ids:
                        self._ids.add(key)
                        if name == self._queues[0] or envelope.type == "job.progress":
                            self.seen.setdefault(envelope.type, []).append(envelope.data)

    def of(self, event_type: str, job_id: int | None = None) -> list[dict[str, Any]]:
        return [
            data
            for data in self.seen.get(event_type, [])
            if job_id is None or data["job_id"] == job_id
        ]

    async def wait_for(
        self, event_type: str, job_id: int | None = None, *, count: int = 1, timeout_s: float = 60
    ) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found := self.of(event_type, job_id)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {count}x {event_type} for job {job_id}: {self.seen}")
            await asyncio.sleep(0.05)
            await self.take()
        return found
