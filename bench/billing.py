"""Billing throughput beside the raw asyncpg ceiling of the same conditional UPDATE, same run.

Billing runs as `imagebot run billing` runs it (its `create_app`, configured from the
environment) on a throwaway database and broker namespace, and the bench plays its neighbours
through events only. Debits: `--debits` JobCreated for accounts spread over `--accounts`, then
`--hot-debits` for one account, wait in billing's queue before billing starts (so that billing's
work alone is timed, not this process publishing); billing then takes each (inbox claim,
conditional debit + ledger row, outbox insert, commit, the relay's publish) and the rate is
that of its BalanceDebited, first to last, by the times billing stamped on them. These figures
include the consumer and the broker: they are not comparable with the handler-only figures of
versions before the bench went through events. Webhooks: top-ups are opened as the gateway
opens them (TopUpRequested → PaymentCreated, billing creating each payment at a local fake
YooKassa API through the real `yookassa` SDK); the fake marks them paid and the bench posts each
notification to billing's webhook route (verify, API re-fetch, credit) through its ASGI app,
`--concurrency` at a time. The ceiling: the same conditional UPDATE through a raw asyncpg pool
of `--concurrency` connections (billing's pool size and prefetch here). At the end every
account must match its ledger.

Last line: `BENCH debits_per_s=… hot_debits_per_s=… webhooks_per_s=… ceiling_per_s=… ratio=…`
(ratio = spread debits / ceiling).

    make bench-billing          # or: python bench/billing.py --accounts 10000 --debits 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import aio_pika  # noqa: E402
import asyncpg  # noqa: E402
from aio_pika.abc import AbstractIncomingMessage  # noqa: E402
from faststream.asgi import AsgiFastStream  # noqa: E402

from bench.common import (  # noqa: E402
    amqp_url,
    configure,
    dsn,
    publish,
    throwaway_database,
    throwaway_namespace,
)
from billing.app import create_app  # noqa: E402
from contracts.envelope import Event, new_envelope  # noqa: E402
from contracts.events import (  # noqa: E402
    BalanceDebited,
    DebitRejected,
    JobCreated,
    PaymentCreated,
    PaymentFailed,
    PaymentSucceeded,
    TopUpRequested,
)
from contracts.topology import Topology  # noqa: E402
from sandbox.yookassa import YooKassaSandbox  # noqa: E402

DEBIT_SQL = (
    "UPDATE users SET balance = balance - $1 WHERE user_id = $2 AND balance >= $1 RETURNING balance"
)
PACKAGE = "small"
"""One of billing's default top-up packages (BILLING_TOPUP_PACKAGES)."""
WATCHED = (BalanceDebited, DebitRejected, PaymentCreated, PaymentFailed, PaymentSucceeded)
TIMEOUT_S = 300.0


async def timed(jobs: Iterable[Callable[[], Awaitable[Any]]], concurrency: int) -> float:
    """Runs the jobs `concurrency` at a time; jobs per second."""
    pending = list(jobs)
    total = len(pending)
    queue: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
    for job in pending:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            await queue.get_nowait()()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def seed_accounts(database: str, accounts: int) -> list[int]:
    """`2 * accounts` accounts with a large balance, each opened through the ledger."""
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            "INSERT INTO users (telegram_id, username, balance) "
            "SELECT 10000000000 + g, 'bench', 1000000000 FROM generate_series(1, $1) g",
            2 * accounts,
        )
        await connection.execute(
            "INSERT INTO billing_ledger (user_id, idempotency_key, kind, amount, balance_after) "
            "SELECT user_id, 'opening:' || user_id, 'opening', 1000000000, 1000000000 FROM users"
        )
        return [r[0] for r in await connection.fetch("SELECT user_id FROM users ORDER BY 1")]
    finally:
        await connection.close()


async def ceiling(database: str, users: list[int], count: int, concurrency: int) -> float:
    pool = await asyncpg.create_pool(database, min_size=concurrency, max_size=concurrency)
    try:

        def debit(user_id: int) -> Callable[[], Awaitable[Any]]:
            return lambda: pool.fetchval(DEBIT_SQL, 1, user_id)

        return await timed((debit(users[i % len(users)]) for i in range(count)), concurrency)
    finally:
        await pool.close()


class Bus:
    """The bench's side of the broker: publishes events as a neighbour service would
    (persistent, confirmed) and keeps what billing emitted, by event type."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self.seen: defaultdict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        """event type -> key (job id, request id) -> the event's data."""
        self.emitted: defaultdict[str, dict[str, float]] = defaultdict(dict)
        """event type -> key -> when billing emitted it (the envelope's time, a timestamp)."""
        self._pending: dict[str, set[str]] = {}
        """event type -> the keys a `wait_for` still waits for."""
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Bus:
        self._connection = await aio_pika.connect(amqp_url())
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.get_exchange(self._topology.events_exchange, ensure=False)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for event in WATCHED:
            await queue.bind(self._exchange, routing_key=event.event_type)
        await queue.consume(self._on, no_ack=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._connection.close()

    async def _on(self, message: AbstractIncomingMessage) -> None:
        envelope = json.loads(message.body)
        data = envelope["data"]
        key = str(data.get("job_id") or data.get("request_id") or data.get("payment_id"))
        self.seen[envelope["type"]][key] = data
        self.emitted[envelope["type"]][key] = datetime.fromisoformat(envelope["time"]).timestamp()
        self._pending.get(envelope["type"], set()).discard(key)
        self._changed.set()

    async def publish(self, event: Event) -> None:
        await publish(self._exchange, new_envelope(event, source="bench"), event.routing_key())

    async def publish_all(self, events: Sequence[Event]) -> None:
        for start in range(0, len(events), 100):
            await asyncio.gather(*(self.publish(event) for event in events[start : start + 100]))

    async def wait_for(self, event: type[Event], keys: Iterable[object], what: str) -> None:
        """Until billing emitted `event` for each of `keys` (job, request or payment ids)."""
        seen = self.seen[event.event_type]
        pending = self._pending[event.event_type] = {str(k) for k in keys} - seen.keys()
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while pending:
                self._changed.clear()
                if self.seen[DebitRejected.event_type] or self.seen[PaymentFailed.event_type]:
                    raise SystemExit(f"billing refused: {dict(self.seen)}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SystemExit(f"timed out waiting for {what}: {len(pending)} missing")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
        finally:
            del self._pending[event.event_type]

    def rate(self, event: type[Event], keys: Iterable[object]) -> float:
        """`event`s per second billing emitted for `keys`, first to last (by the envelopes)."""
        emitted = self.emitted[event.event_type]
        times = [emitted[str(key)] for key in keys]
        return (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else 0.0


def job_created(users: list[int], first_job: int) -> list[JobCreated]:
    """JobCreated for each of `users`, a new job each, numbered from `first_job`."""
    jobs = range(first_job, first_job + len(users))
    return [
        JobCreated(
            job_id=job_id,
            request_id=uuid.uuid4(),
            user_id=user_id,
            telegram_id=1,
            chat_id=1,
            price=1,
            workflow_type="qwen_edit_2511",
        )
        for job_id, user_id in zip(jobs, users, strict=True)
    ]


async def webhooks(
    app: AsgiFastStream, bus: Bus, fake: YooKassaSandbox, users: list[int], concurrency: int
) -> float:
    """Top-ups opened through events, paid at the fake; webhooks per second billing takes."""
    requests = [uuid.uuid4() for _ in users]
    created = bus.seen[PaymentCreated.event_type]
    await bus.publish_all(
        [
            TopUpRequested(
                request_id=request_id,
                user_id=user_id,
                telegram_id=10_000_000_000 + user_id,
                chat_id=10_000_000_000 + user_id,
                package_id=PACKAGE,
            )
            for request_id, user_id in zip(requests, users, strict=True)
        ]
    )
    await bus.wait_for(PaymentCreated, requests, "the payments created")
    ours = {str(created[str(r)]["payment_id"]) for r in requests}
    bodies = []
    for remote_id, payment in list(fake.payments.items()):
        if payment["metadata"].get("payment_id") in ours:
            fake.set_status(remote_id, "succeeded")
            bodies.append(json.dumps(fake.notification(remote_id)).encode())
    if len(bodies) != len(users):
        raise SystemExit(f"{len(bodies)} payments at the fake YooKassa for {len(users)} top-ups")

    def post(body: bytes) -> Callable[[], Awaitable[Any]]:
        async def call() -> None:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/webhooks/yookassa",
                "raw_path": b"/webhooks/yookassa",
                "query_string": b"",
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 8080),
                "headers": [(b"content-type", b"application/json")],
            }
            chunks = [{"type": "http.request", "body": body, "more_body": False}]
            answers: list[MutableMapping[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return chunks.pop(0) if chunks else {"type": "http.disconnect"}

            async def send(message: MutableMapping[str, Any]) -> None:
                answers.append(message)

            await app(scope, receive, send)
            if answers[0].get("status") != 200:
                raise SystemExit(f"the webhook answered {answers}")

        return call

    per_s = await timed((post(body) for body in bodies), concurrency)
    await bus.wait_for(PaymentSucceeded, ours, "the payments credited")
    return per_s


async def drift(database: str, users: list[int]) -> int:
    connection = await asyncpg.connect(database)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM users u WHERE u.user_id = ANY($1) "
                "AND u.balance IS DISTINCT FROM (SELECT COALESCE(sum(amount), 0) "
                "FROM billing_ledger l WHERE l.user_id = u.user_id)",
                users,
            )
        )
    finally:
        await connection.close()


async def main(args: argparse.Namespace) -> None:
    accounts, concurrency = args.accounts, args.concurrency
    fake = YooKassaSandbox()
    await fake.start()
    try:
        async with (
            throwaway_database("billing") as url,
            throwaway_namespace("billing") as topology,
        ):
            database = dsn(url)
            seeded = await seed_accounts(database, accounts)
            # The raw ceiling runs on accounts of its own: it moves balances without the ledger.
            raw_users, users = seeded[:accounts], seeded[accounts:]
            ceiling_per_s = await ceiling(database, raw_users, args.debits, concurrency)
            hot_ceiling = await ceiling(database, raw_users[:1], args.hot_debits, concurrency)
            configure(
                DATABASE_URL=url,
                DATABASE_POOL_SIZE=str(concurrency),
                AMQP_URL=amqp_url(),
                AMQP_NAMESPACE=topology.namespace,
                AMQP_PREFETCH=str(concurrency),
                YOOKASSA_API_URL=fake.api_url,
                YOOKASSA_TIMEOUT_S="5",
                BONUS_ENABLED="false",
                WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32",
                SERVICE_GRACEFUL_TIMEOUT_S="5",
            )
            async with Bus(topology) as bus:
                # The backlog waits in billing's queue before billing starts: then billing's
                # work alone is timed, not this process publishing meanwhile.
                warm_up = job_created(users[: min(200, accounts)], first_job=1)
                spread = job_created(
                    [users[i % accounts] for i in range(args.debits)], first_job=len(warm_up) + 1
                )
                hot = job_created(
                    [users[1]] * args.hot_debits, first_job=len(warm_up) + len(spread) + 1
                )
                await bus.publish_all(warm_up + spread + hot)
                app = create_app()
                async with app:
                    every = [event.job_id for event in warm_up + spread + hot]
                    await bus.wait_for(BalanceDebited, every, "the debits")
                    debits_per_s = bus.rate(BalanceDebited, (e.job_id for e in spread))
                    hot_per_s = bus.rate(BalanceDebited, (e.job_id for e in hot))
                    paying = users[2 : 2 + args.webhooks]
                    webhooks_per_s = await webhooks(app, bus, fake, paying, concurrency)
            drifting = await drift(database, users)
    finally:
        await fake.stop()
    print(f"spread debits over {accounts} accounts: {debits_per_s:8.0f}/s "
          f"vs raw asyncpg {ceiling_per_s:8.0f}/s")  # fmt: skip
    print(f"hot-account debits:                  {hot_per_s:8.0f}/s "
          f"vs raw asyncpg {hot_ceiling:8.0f}/s")  # fmt: skip
    print(f"webhooks (verify + API re-fetch + credit): {webhooks_per_s:6.0f}/s")
    print(f"accounts drifting from their ledger after the run: {drifting}")
    if drifting:
        raise SystemExit(f"{drifting} accounts drift from their ledger")
    print(
        f"BENCH debits_per_s={debits_per_s:.0f} hot_debits_per_s={hot_per_s:.0f} "
        f"webhooks_per_s={webhooks_per_s:.0f} ceiling_per_s={ceiling_per_s:.0f} "
        f"ratio={debits_per_s / ceiling_per_s:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts debits spread over")
    parser.add_argument("--debits", type=int, default=10_000, help="debits spread over accounts")
    parser.add_argument("--hot-debits", type=int, default=3_000, help="debits of one account")
    parser.add_argument("--webhooks", type=int, default=500, help="top-ups paid through webhooks")
    parser.add_argument("--concurrency", type=int, default=10, help="prefetch, pool, webhooks")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.disable(logging.INFO)  # FastStream logs a line per message
    asyncio.run(main(arguments))
