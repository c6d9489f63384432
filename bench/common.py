"""What the benchmarks share: the servers they use, throwaway databases and broker namespaces,
and the way services are configured.

Benchmarks drive the services through their public roots only: each service's `create_app`,
configured the way `imagebot run` configures it (the environment), the `imagebot` command, the
events of the contract, and the sandboxes. What a bench needs beyond that lives here, in one
place, so that a refactoring of a service's insides leaves the benches running.

Every bench prints its figures last, as `BENCH key=value ...`; the smoke tests
(tests/integration/test_benchmarks.py) run each at a tiny size and parse that line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractExchange
from sqlalchemy.engine import make_url

from contracts.envelope import RawEnvelope
from contracts.topology import Topology, build_topology
from imagebot.database import drop_database
from messaging.broker import declare_topology, delete_topology

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def database_server_url() -> str:
    """The PostgreSQL server benches create their throwaway databases on (`DATABASE_URL`)."""
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def amqp_url() -> str:
    """The RabbitMQ broker benches use under throwaway namespaces (`AMQP_URL`)."""
    return os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL


def dsn(url: str) -> str:
    """`url` as asyncpg takes it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def unique(label: str) -> str:
    """A name no other run uses: `imagebot_bench_<label>_<hex>`."""
    return f"imagebot_bench_{label}_{uuid.uuid4().hex[:8]}"


async def imagebot(*arguments: str, env: dict[str, str] | None = None) -> str:
    """Run the `imagebot` command (as `python -m imagebot`); its output. Fails loudly."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagebot",
        *arguments,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(
            f"imagebot {' '.join(arguments)} exited with {process.returncode}:\n{text}"
        )
    return text


@asynccontextmanager
async def throwaway_database(label: str) -> AsyncIterator[str]:
    """A fresh database on the server, brought to head by `imagebot migrate`; dropped after.

    Yields its URL (the asyncpg dialect, as the services take it; `dsn` for asyncpg itself).
    """
    server = make_url(database_server_url())
    url = server.set(drivername="postgresql+asyncpg", database=unique(label)).render_as_string(
        hide_password=False
    )
    try:
        await imagebot("migrate", env={"DATABASE_URL": url})
        yield url
    finally:
        await drop_database(url)


@asynccontextmanager
async def throwaway_namespace(label: str) -> AsyncIterator[Topology]:
    """A broker namespace of this run's own, declared (as each service declares it at start);
    its exchanges and queues are deleted after."""
    topology = build_topology(f"bench-{label}-{uuid.uuid4().hex[:8]}")
    try:
        await declare_topology(amqp_url(), topology)
        yield topology
    finally:
        await delete_topology(amqp_url(), topology)


async def publish(exchange: AbstractExchange, envelope: RawEnvelope, routing_key: str) -> None:
    """An event as our services publish it: persistent JSON, the envelope's id as message id."""
    await exchange.publish(
        aio_pika.Message(
            envelope.model_dump_json().encode(),
            message_id=str(envelope.id),
            type=envelope.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
        ),
        routing_key=routing_key,
    )


def configure(**variables: str) -> None:
    """Set the environment a service's `create_app()` reads its settings from, as `imagebot run`
    does (names as in .env.example): the bench then needs none of the settings classes."""
    os.environ.update(variables)


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at `fraction` of the sorted samples (nan when there are none)."""
    ordered = sorted(samples)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] if ordered else float("nan")
