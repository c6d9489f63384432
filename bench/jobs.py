"""Request → dispatch latency and throughput of the jobs service alone.

Runs the real jobs service in process on a throwaway database and broker namespace, and plays
its neighbours: virtual users (closed loop, `--concurrency` at a time, a fresh account per job)
publish JobRequested; a stand-in for billing answers each JobCreated with BalanceDebited at
once; the clock stops when the job's JobDispatched reaches the GPU exchange binding. Each job
is 4 broker hops and 2 database transactions (JobRequested → JobCreated, BalanceDebited →
JobDispatched + JobQueued), each event relayed from the outbox.

The baseline, measured first in the same run on the same broker: one raw publish → consume
hop through the events exchange at the same concurrency. The last line is the jobs figure.

    make bench-jobs            # or: python bench/jobs.py --jobs 1000 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage  # noqa: E402

from bench.common import (  # noqa: E402
    amqp_url,
    configure,
    dsn,
    percentile,
    publish,
    throwaway_database,
    throwaway_namespace,
)
from contracts.envelope import RawEnvelope, new_envelope, open_envelope  # noqa: E402
from contracts.events import (  # noqa: E402
    CATALOG,
    BalanceDebited,
    JobCreated,
    JobDispatched,
    JobDispatchedV1,
    JobProgress,
    JobRequested,
    JobRequestRejected,
)
from contracts.topology import Topology  # noqa: E402
from jobs.app import create_app  # noqa: E402

TIMEOUT_S = 60.0
"""How long one job may take before the bench gives up (the service is stuck)."""


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def closed_loop(
    total: int, concurrency: int, one: Callable[[int], Awaitable[float]]
) -> tuple[list[float], float]:
    """Run `one(i)` for i < total, `concurrency` at a time; latencies (ms) and wall time (s)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for index in counter:
            latencies.append(await one(index))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def baseline(channel: AbstractChannel, topology: Topology, total: int, conc: int) -> str:
    exchange = await channel.get_exchange(topology.events_exchange, ensure=False)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key="bench.ping")
    waiting: dict[str, asyncio.Future[float]] = {}

    async def arrived(message: AbstractIncomingMessage) -> None:
        waiting.pop(message.message_id or "").set_result(time.perf_counter())

    await queue.consume(arrived, no_ack=True)

    async def one(index: int) -> float:
        envelope = new_envelope(JobProgress(job_id=1, attempt=1, step=index, total_steps=1),
                                source="bench")  # fmt: skip
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiting[str(envelope.id)] = done
        sent = time.perf_counter()
        await publish(exchange, envelope, "bench.ping")
        return (await asyncio.wait_for(done, TIMEOUT_S) - sent) * 1000

    latencies, wall = await closed_loop(total, conc, one)
    return (
        f"baseline broker hop (publish → consume, {total} msgs, concurrency {conc}): "
        f"msgs_per_s={total / wall:.0f} p50_ms={percentile(latencies, 0.5):.2f} "
        f"p99_ms={percentile(latencies, 0.99):.2f}"
    )


async def jobs_run(channel: AbstractChannel, topology: Topology, total: int, conc: int) -> str:
    exchange = await channel.get_exchange(topology.events_exchange, ensure=False)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    for key in ("job.created", "job.request_rejected", "job.dispatched.#"):
        await queue.bind(exchange, routing_key=key)
    waiting: dict[uuid.UUID, asyncio.Future[float]] = {}
    request_of: dict[int, uuid.UUID] = {}

    async def arrived(message: AbstractIncomingMessage) -> None:
        envelope = RawEnvelope.model_validate_json(message.body)
        event = open_envelope(envelope, CATALOG)
        if isinstance(event, JobCreated):  # billing's part: debit at once
            request_of[event.job_id] = event.request_id
            debited = BalanceDebited(
                job_id=event.job_id, user_id=event.user_id, amount=event.price, balance=1000
            )
            await publish(exchange, new_envelope(debited, source="bench", cause=envelope),
                          debited.routing_key())  # fmt: skip
        elif isinstance(event, JobDispatched | JobDispatchedV1):  # v1: a job of one image
            waiting.pop(request_of.pop(event.job_id)).set_result(time.perf_counter())
        elif (  # a refusal comes as a v1 and a v2 copy: the first one tells
            isinstance(event, JobRequestRejected)
            and (refused := waiting.pop(event.request_id, None)) is not None
        ):
            refused.set_exception(RuntimeError(f"jobs refused a request: {event.detail}"))

    await queue.consume(arrived, no_ack=True)
    accounts = itertools.count(1)

    async def one(index: int) -> float:
        user_id = next(accounts)  # a fresh account per job: no per-user cap in the way
        request = JobRequested(
            request_id=uuid.uuid4(),
            user_id=user_id,
            telegram_id=user_id,
            chat_id=user_id,
            preset_id=1,
            image_keys=["uploads/bench.jpg"],
            price=30,  # as the preset below is priced, so the user confirmed it
        )
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiting[request.request_id] = done
        sent = time.perf_counter()
        await publish(exchange, new_envelope(request, source="bench"), request.routing_key())
        try:
            return (await asyncio.wait_for(done, TIMEOUT_S) - sent) * 1000
        except TimeoutError:
            raise SystemExit(
                f"job request {index} was not dispatched within {TIMEOUT_S:.0f} s"
            ) from None

    await closed_loop(min(conc, total), conc, one)  # warm-up: connections, caches
    cpu_before = process_cpu_s()
    latencies, wall = await closed_loop(total, conc, one)
    cpu_ms = (process_cpu_s() - cpu_before) * 1000 / total
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return (
        f"jobs request → dispatch ({total} jobs, concurrency {conc}): "
        f"jobs_per_s={total / wall:.0f} p50_ms={p50:.2f} p99_ms={p99:.2f} "
        f"process_cpu_ms_per_job={cpu_ms:.2f} (the service and this bench's own clients; "
        "steadier than the rates on a shared machine)\n"
        f"BENCH jobs_per_s={total / wall:.1f} p50_ms={p50:.2f} p99_ms={p99:.2f}"
    )


async def seed(database: str, users: int) -> None:
    """Accounts with credits (billing's table, read by nobody here) and the one preset."""
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            "INSERT INTO users (telegram_id, balance) SELECT n, 1000 FROM generate_series(1, $1) n",
            users,
        )
        await connection.execute(
            "INSERT INTO presets (category, name, prompt, price, order_index, workflow_type) "
            "VALUES ('фото', 'Ретушь', 'Retouch the portrait', 30, 1, 'qwen_edit_2511')"
        )
    finally:
        await connection.close()


async def main(total: int, concurrency: int) -> None:
    async with (
        throwaway_database("jobs") as url,
        throwaway_namespace("jobs") as topology,
    ):
        await seed(dsn(url), total + concurrency)
        connection = await aio_pika.connect_robust(amqp_url())
        try:
            channel = await connection.channel()
            print(await baseline(channel, topology, total * 2, concurrency), flush=True)
            configure(
                DATABASE_URL=url,
                AMQP_URL=amqp_url(),
                AMQP_NAMESPACE=topology.namespace,
                SERVICE_GRACEFUL_TIMEOUT_S="5",
            )
            async with create_app():
                print(await jobs_run(channel, topology, total, concurrency), flush=True)
        finally:
            await connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.disable(logging.INFO)  # FastStream logs a line per message: measure jobs, not that
    asyncio.run(main(arguments.jobs, arguments.concurrency))
