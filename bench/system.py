"""The whole chain under load: gateway → jobs → billing → runner → gateway, as processes.

The system runs exactly as `imagebot demo` runs it (every service its own process, real
PostgreSQL and RabbitMQ, sandbox Telegram Bot API and YooKassa) with a zero-work pipeline: the
runner's CPU `pillow_filter` on a 32×32 photo, one step. Users are prepared first (photo sent,
preset picked, the price shown); then they tap «Запустить», which is where a request begins.

1. Ceilings, measured first in the same run: the broker (persistent messages through a quorum
   queue with publisher confirms and acks, as our services use it) in messages/s, and the
   database (one-row write transactions from 10 connections) in commits/s.
2. Latency at a steady rate (`--rate`, default 50 jobs/s, open loop): request → runner start
   (JobStarted) p50/p99, and completion (JobCompleted) → the photo arriving in the chat.
3. Throughput: `--jobs` users tap at once; jobs/s from the first tap to the last photo.

Efficiency compares the throughput with what the ceilings allow for the messages and commits
one job actually took (counted from the services' metrics and PostgreSQL's statistics):
`ceiling_jobs_per_s = min(broker_msgs_per_s / msgs_per_job, db_commits_per_s / commits_per_job)`.
In steps 2 and 3 the sandbox does not enforce Telegram's 30 messages/s (each job takes several
sends, and 50 jobs/s is far past any bot's budget), so the gateway's global rate is raised to
1,000/s; the per-chat limit stays. Then:

4. Delivery within Telegram's budget: the gateways restart on their defaults (29 messages/s
   bot-wide, per chat a burst of 5 then one a second), the sandbox enforces Telegram's limits,
   and `--deliver-rate` jobs/s (default 5, about what fifteen H100s deliver) measure completion
   → photo. BENCH's `deliver_p99_ms` is this one (target ≤ 500 ms).

The observer binds only to JobStarted and JobCompleted (two extra deliveries per job; which
chat a job is for it reads from the jobs table afterwards); `--hops` binds it to every event of
the chain and prints p50/p99 hop by hop, at the price of ~8 more deliveries per job that
RabbitMQ and the bench process pay (it slows the system).

    make bench                  # or: python bench/system.py --jobs 1000 --rate 50 [--hops]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from PIL import Image
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.common import amqp_url, database_server_url, percentile, unique  # noqa: E402
from contracts.envelope import RawEnvelope  # noqa: E402
from contracts.topology import build_topology  # noqa: E402
from imagebot.database import drop_database, ensure_database  # noqa: E402
from messaging.broker import delete_topology  # noqa: E402
from sandbox.stack import SandboxStack, StackConfig  # noqa: E402
from sandbox.story import new_user  # noqa: E402
from sandbox.telegram import Call  # noqa: E402
from sandbox.user import SandboxUser  # noqa: E402

PRESET = "Чёрно-белое"
PRICE = 10


def tiny_photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


# --- ceilings -------------------------------------------------------------------------------


async def broker_ceiling(total: int) -> float:
    """Persistent messages/s through a quorum queue: confirmed publishes, acked deliveries."""
    connection = await aio_pika.connect(amqp_url())
    async with connection:
        publishing = await connection.channel(publisher_confirms=True)
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=20)
        name = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
        queue = await consuming.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        done = asyncio.get_running_loop().create_future()
        received = 0

        async def arrived(message: AbstractIncomingMessage) -> None:
            nonlocal received
            await message.ack()
            received += 1
            if received == total and not done.done():
                done.set_result(None)

        tag = await queue.consume(arrived)
        body = b"x" * 600  # about one of our envelopes
        began = time.perf_counter()

        async def publish(index: int) -> None:
            await publishing.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=name,
            )

        for start in range(0, total, 100):
            await asyncio.gather(*(publish(i) for i in range(start, min(start + 100, total))))
        await done
        elapsed = time.perf_counter() - began
        await queue.cancel(tag)
        await consuming.queue_delete(name)
    return total / elapsed


async def database_ceiling(dsn: str, seconds: float) -> float:
    """One-row INSERT transactions (autocommit, durable) per second from 10 connections."""
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    table = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, body text)")
    commits = 0
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal commits
        async with pool.acquire() as connection:
            while time.perf_counter() < deadline:
                await connection.execute(f"INSERT INTO {table} (body) VALUES ($1)", "x" * 200)
                commits += 1

    began = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(10)))
    elapsed = time.perf_counter() - began
    await pool.execute(f"DROP TABLE {table}")
    await pool.close()
    return commits / elapsed


# --- counting what a job costs ----------------------------------------------------------------


async def consumed_messages(stack: SandboxStack) -> float:
    total = 0.0
    async with aiohttp.ClientSession() as http:
        for process in stack.all_processes:
            async with http.get(f"{process.url}/metrics") as answer:
                body = await answer.text()
            total += sum(
                float(value)
                for value in re.findall(r"^imagebot_messages_consumed_total{.*} (\S+)$", body, re.M)
            )
    return total


async def commits(dsn: str, database: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        value = await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database
        )
    finally:
        await connection.close()
    return int(value)


def cpu_seconds(stack: SandboxStack) -> dict[str, float]:
    """CPU seconds (user + system) used so far, per service replica, PostgreSQL, RabbitMQ, bench.

    PostgreSQL's backends are the services' pooled connections, alive for the whole run, so
    summing the live `postgres` processes counts the database's work in a window.
    """
    tick = os.sysconf("SC_CLK_TCK")

    def used(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    totals = {
        process.name: used(process.process.pid)
        for process in stack.all_processes
        if process.process is not None
    }
    totals["bench"] = sum(os.times()[:2])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "comm").read_text().strip()
        except OSError:
            continue
        group = {"postgres": "postgresql", "beam.smp": "rabbitmq"}.get(command)
        if group:
            totals[group] = totals.get(group, 0.0) + used(int(entry.name))
    return totals


# --- the users ----------------------------------------------------------------------------


HOPS = (
    ("tap", "job.requested"),
    ("job.requested", "job.created"),
    ("job.created", "balance.debited"),
    ("balance.debited", "job.dispatched"),
    ("job.dispatched", "job.started"),
    ("job.started", "job.completed"),
    ("job.completed", "job.succeeded"),
    ("job.succeeded", "photo"),
)
"""The chain, hop by hop: each event's time is when its producer emitted it."""


class Observer:
    """Listens to the job events on the bus: when each job (each chat) reached each stage.

    Events name their job; which chat a job is for comes from the jobs table after the run
    (`link`), so the observer needs no JobCreated delivery of its own."""

    def __init__(self) -> None:
        self._by_job: dict[int, dict[str, float]] = {}
        self._job_of_chat: dict[int, int] = {}
        self.times: dict[int, dict[str, float]] = {}  # chat -> stage -> wall time
        self.hops = False

    async def start(
        self, url: str, namespace: str, *, hops: bool
    ) -> aio_pika.abc.AbstractConnection:
        """Bind to what it needs: JobStarted and JobCompleted; with `hops`, every event of the
        chain. Each binding is one more delivery per job for RabbitMQ and this process, load
        the system under test would not have."""
        topology = build_topology(namespace)
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.events_exchange, ensure=False)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        self.hops = hops
        keys = {a for a, _ in HOPS} | {b for _, b in HOPS} if hops else MEASURED
        for key in keys:
            if "." in key:
                await queue.bind(exchange, routing_key=f"{key}.#")
        await queue.consume(self._on, no_ack=True)
        return connection

    def link(self, job_of_chat: dict[int, int]) -> None:
        self._job_of_chat.update(job_of_chat)

    def stage(self, chat: int, name: str) -> float | None:
        at = self.times.get(chat, {}).get(name)
        if at is None and (job := self._job_of_chat.get(chat)) is not None:
            at = self._by_job.get(job, {}).get(name)
        return at

    def mark(self, chat: int, name: str, at: float) -> None:
        self.times.setdefault(chat, {}).setdefault(name, at)

    async def _on(self, message: AbstractIncomingMessage) -> None:
        envelope = RawEnvelope.model_validate_json(message.body)
        data, at = envelope.data, envelope.time.timestamp()
        if "job_id" in data:
            self._by_job.setdefault(int(data["job_id"]), {}).setdefault(envelope.type, at)
        else:  # job.requested: no job yet
            self.mark(int(data["chat_id"]), envelope.type, at)


MEASURED = {"job.started", "job.completed"}


async def jobs_of(dsn: str, chats: set[int]) -> dict[int, int]:
    """Each chat's job (a bench user makes one)."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT chat_id, id FROM jobs WHERE chat_id = ANY($1::bigint[])", list(chats)
        )
    finally:
        await connection.close()
    return {row["chat_id"]: row["id"] for row in rows}


TARGET_JOBS_PER_S = 100.0
TARGET_START_P99_MS = 250.0
TARGET_RATE = 50.0
"""Issue 8's targets on the 2-core machine: 100 jobs/s sustained; start p99 under 250 ms at
50 jobs/s."""


async def prepare(stack: SandboxStack, count: int, photo: bytes) -> list[tuple[SandboxUser, Call]]:
    """`count` users who sent a photo and picked the preset: each with the price message."""
    ready: list[tuple[SandboxUser, Call]] = []
    gate = asyncio.Semaphore(200)

    async def one() -> None:
        async with gate:
            user = SandboxUser(stack.telegram, new_user())
            user.photo(photo)
            categories = await user.expect("Фото получено", timeout_s=120)
            user.press(categories, "фильтры")
            presets = await user.expect("выберите пресет", timeout_s=120)
            user.press(presets, PRESET)
            confirm = await user.expect(f"Стоимость: {PRICE} кредитов", timeout_s=120)
            user.mark()
            ready.append((user, confirm))

    await asyncio.gather(*(one() for _ in range(count)))
    return ready


async def delivered(
    stack: SandboxStack, chats: set[int], since: int, timeout_s: float
) -> dict[int, float]:
    """Wait for a photo in each chat; when each arrived (wall time)."""
    offset = time.time() - time.monotonic()
    found: dict[int, float] = {}
    seen = since
    deadline = time.monotonic() + timeout_s
    while len(found) < len(chats) and time.monotonic() < deadline:
        calls = stack.telegram.calls
        for call in calls[seen:]:
            if call.method == "sendPhoto" and call.chat_id in chats:
                found.setdefault(call.chat_id, call.at + offset)
        seen = len(calls)
        await asyncio.sleep(0.05)
    return found


async def tap_all(users: list[tuple[SandboxUser, Call]], rate: float | None) -> dict[int, float]:
    """Each user taps «Запустить» (`rate` per second, or all at once); when each tapped."""
    tapped: dict[int, float] = {}
    began = time.monotonic()
    for index, (user, confirm) in enumerate(users):
        if rate:
            await asyncio.sleep(max(0.0, began + index / rate - time.monotonic()))
        tapped[user.user.id] = time.time()
        user.press(confirm, "Запустить")
    return tapped


# --- the run ------------------------------------------------------------------------------


async def measured(
    label: str,
    dsn: str,
    stack: SandboxStack,
    observer: Observer,
    users: list[tuple[SandboxUser, Call]],
    rate: float | None,
) -> tuple[float, list[float], list[float]]:
    since = len(stack.telegram.calls)
    chats = {user.user.id for user, _ in users}
    tapped = await tap_all(users, rate)
    photos = await delivered(stack, chats, since, timeout_s=300)
    missing = len(chats) - len(photos)
    if missing:
        raise SystemExit(f"{label}: {missing} of {len(chats)} jobs never delivered")
    await asyncio.sleep(0.5)  # the last events reach the observer
    observer.link(await jobs_of(dsn, chats))
    for chat in chats:
        observer.mark(chat, "tap", tapped[chat])
        observer.mark(chat, "photo", photos[chat])

    def spans(first: str, then: str) -> list[float]:
        return [
            (b - a) * 1000
            for chat in chats
            if (a := observer.stage(chat, first)) and (b := observer.stage(chat, then))
        ]

    if observer.hops:
        hops = []
        for first, then in HOPS:
            took = spans(first, then)
            hops.append(f"{then} +{percentile(took, 0.5):.0f}/{percentile(took, 0.99):.0f}")
        print(f"  {label}, hop p50/p99 ms: tap → " + " → ".join(hops))
    wall = max(photos.values()) - min(tapped.values())
    return len(chats) / wall, spans("tap", "job.started"), spans("job.completed", "photo")


async def within_budget(
    dsn: str,
    stack: SandboxStack,
    observer: Observer,
    photo: bytes,
    rate: float,
    seconds: float,
) -> tuple[list[float], int]:
    """Completion → photo with the gateway back on Telegram's budget (its defaults), which the
    sandbox now enforces: the gateways restart without the raised rate."""
    for gateway in stack.processes["bot_gateway"]:
        await gateway.stop()
        gateway.env = {k: v for k, v in gateway.env.items() if k != "DELIVERY_GLOBAL_RATE_PER_S"}
        await gateway.start()
        await gateway.ready(60)
    stack.telegram.enforce_limits = True
    refused = stack.telegram.http_429
    users = await prepare(stack, max(1, int(rate * seconds)), photo)
    _, _, deliver_ms = await measured("within budget", dsn, stack, observer, users, rate)
    return deliver_ms, stack.telegram.http_429 - refused


async def main(args: argparse.Namespace) -> None:
    server = make_url(database_server_url()).set(drivername="postgresql+asyncpg")
    name = unique("system")
    database_url = server.set(database=name).render_as_string(hide_password=False)
    dsn = server.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="imagebot-bench-"))
    config = StackConfig(
        database_url=database_url,
        amqp_url=amqp_url(),
        namespace=namespace,
        work_dir=work_dir,
        replicas=args.replicas,
        # A zero-work pipeline: moderation (nudenet on the CPU, ~30 ms a photo here, beside a
        # GPU render of seconds in production) is work, measured in bench/moderation.py.
        env={"SERVICE_LOG_LEVEL": "WARNING", "MODERATION_ENABLED": "false"},
        service_env={
            "gpu_runner": {"GPU_WORKFLOWS": "pillow_filter", "GPU_PILLOW_FILTER_STEPS": "1"},
            "bot_gateway": {"DELIVERY_GLOBAL_RATE_PER_S": "1000"},
        },
    )
    photo = tiny_photo()
    try:
        await ensure_database(database_url)
        broker_msgs = await broker_ceiling(args.ceiling_messages)
        db_commits = await database_ceiling(dsn, args.ceiling_s)
        print(f"ceilings: broker_msgs_per_s={broker_msgs:.0f} db_commits_per_s={db_commits:.0f}")
        async with SandboxStack(config) as stack:
            observer = Observer()
            connection = await observer.start(amqp_url(), namespace, hops=args.hops)
            latency_users = int(args.rate * args.seconds)
            print(f"preparing {latency_users + args.jobs} users (photo, preset, price shown) …")
            began = time.monotonic()
            users = await prepare(stack, latency_users + args.jobs, photo)
            print(f"prepared in {time.monotonic() - began:.1f} s")

            _, start_ms, deliver_ms = await measured(
                "latency", dsn, stack, observer, users[:latency_users], args.rate
            )
            print(
                f"at {args.rate:.0f} jobs/s for {args.seconds:.0f} s ({latency_users} jobs): "
                f"start_p50_ms={percentile(start_ms, 0.5):.0f} "
                f"start_p99_ms={percentile(start_ms, 0.99):.0f} "
                f"deliver_p50_ms={percentile(deliver_ms, 0.5):.0f} "
                f"deliver_p99_ms={percentile(deliver_ms, 0.99):.0f}"
            )

            calls_before = len(stack.telegram.calls)
            messages_before = await consumed_messages(stack)
            commits_before = await commits(dsn, name)
            cpu_before = cpu_seconds(stack)
            jobs_per_s, _, _ = await measured(
                "throughput", dsn, stack, observer, users[latency_users:], None
            )
            cpu_after = cpu_seconds(stack)
            await asyncio.sleep(3)  # the last progress and delivery events settle
            msgs_per_job = (await consumed_messages(stack) - messages_before) / args.jobs
            commits_per_job = (await commits(dsn, name) - commits_before) / args.jobs
            ceiling = min(broker_msgs / msgs_per_job, db_commits / commits_per_job)
            print(
                f"{args.jobs} jobs at once: jobs_per_s={jobs_per_s:.1f} "
                f"msgs_per_job={msgs_per_job:.1f} commits_per_job={commits_per_job:.1f} "
                f"ceiling_jobs_per_s={ceiling:.0f}"
            )
            spent = {
                who: (cpu_after[who] - cpu_before.get(who, 0.0)) * 1000 / args.jobs
                for who in cpu_after
            }
            methods = Counter(call.method for call in stack.telegram.calls[calls_before:])
            print(
                "  telegram calls per job: "
                + " ".join(f"{m}={n / args.jobs:.2f}" for m, n in sorted(methods.items()))
            )
            cores = os.cpu_count() or 1
            print(
                f"  cpu ms per job: total={sum(spent.values()):.1f} "
                + " ".join(f"{who}={ms:.1f}" for who, ms in sorted(spent.items()))
                + f" (so {cores} cores run at most {cores * 1000 / sum(spent.values()):.0f} jobs/s)"
            )

            in_budget_ms, refused = await within_budget(
                dsn, stack, observer, photo, args.deliver_rate, args.deliver_seconds
            )
            print(
                f"within Telegram's budget (29 messages/s bot-wide, per chat a burst of 5 then "
                f"1/s; enforced by the sandbox), at {args.deliver_rate:g} jobs/s for "
                f"{args.deliver_seconds:g} s: deliver_p50_ms={percentile(in_budget_ms, 0.5):.0f} "
                f"deliver_p99_ms={percentile(in_budget_ms, 0.99):.0f} http_429={refused}"
            )
            await connection.close()
    finally:
        try:
            await delete_topology(amqp_url(), build_topology(namespace))
        finally:
            await drop_database(database_url)
            if not args.work_dir:
                shutil.rmtree(work_dir, ignore_errors=True)
    start_p99 = percentile(start_ms, 0.99)
    print(
        f"targets: jobs_per_s>={TARGET_JOBS_PER_S:.0f} "
        f"{'met' if jobs_per_s >= TARGET_JOBS_PER_S else 'missed'}; "
        f"start_p99_ms<{TARGET_START_P99_MS:.0f} at {args.rate:.0f} jobs/s "
        f"{'met' if start_p99 < TARGET_START_P99_MS else 'missed'}"
        + ("" if args.rate == TARGET_RATE else f" (the target is at {TARGET_RATE:.0f} jobs/s)")
    )
    print(
        f"BENCH jobs_per_s={jobs_per_s:.1f} start_p50_ms={percentile(start_ms, 0.5):.0f} "
        f"start_p99_ms={percentile(start_ms, 0.99):.0f} "
        f"deliver_p99_ms={percentile(in_budget_ms, 0.99):.0f} "
        f"efficiency={jobs_per_s / ceiling:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="users tapping at once")
    parser.add_argument("--rate", type=float, default=50.0, help="jobs/s of the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument(
        "--deliver-rate", type=float, default=5.0, help="jobs/s of the run within Telegram's budget"
    )
    parser.add_argument("--deliver-seconds", type=float, default=10.0, help="length of that run")
    parser.add_argument(
        "--hops",
        action="store_true",
        help="observe every event of the chain and print p50/p99 hop by hop (adds load)",
    )
    parser.add_argument("--replicas", type=int, default=1, help="processes per service")
    parser.add_argument(
        "--ceiling-messages", type=int, default=5000, help="messages the broker ceiling sends"
    )
    parser.add_argument(
        "--ceiling-s", type=float, default=3.0, help="seconds the database ceiling writes"
    )
    parser.add_argument(
        "--work-dir", default="", help="logs and objects, kept (default: a temp dir, removed)"
    )
    asyncio.run(main(parser.parse_args()))
