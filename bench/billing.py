"""Billing throughput beside the raw asyncpg ceiling of the same conditional UPDATE, same run.

Debits go through the real code path of the debit use case: the consumer's handler for
JobCreated (inbox claim, conditional debit + ledger row, outbox insert, commit), with
CONCURRENCY of them in flight, as a consumer with that prefetch would run them. Webhooks go
through the webhook ASGI app, the real `yookassa` SDK and a local fake YooKassa API. The
database is a throwaway one created (and dropped) by this script.

Last line: `BENCH debits_per_s=… hot_debits_per_s=… webhooks_per_s=… ceiling_per_s=… ratio=…`
(ratio = spread debits / ceiling).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from billing.app import build  # noqa: E402
from billing.settings import BonusSettings, WebhookSettings  # noqa: E402
from contracts.envelope import new_envelope  # noqa: E402
from contracts.events import JobCreated  # noqa: E402
from contracts.topology import build_topology  # noqa: E402
from sandbox.yookassa import YooKassaSandbox  # noqa: E402
from support.billing_harness import make_settings  # noqa: E402
from support.database import DatabaseFactory, migrate  # noqa: E402

ACCOUNTS = 10_000
SPREAD_DEBITS = 10_000
HOT_DEBITS = 3_000
WEBHOOKS = 500
CONCURRENCY = 10
DEBIT_SQL = (
    "UPDATE users SET balance = balance - $1 WHERE user_id = $2 AND balance >= $1 RETURNING balance"
)


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


async def seed_accounts(dsn: str) -> list[int]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO users (telegram_id, username, balance) "
            "SELECT 10000000000 + g, 'bench', 1000000000 FROM generate_series(1, $1) g",
            2 * ACCOUNTS,
        )
        await connection.execute(
            "INSERT INTO billing_ledger (user_id, idempotency_key, kind, amount, balance_after) "
            "SELECT user_id, 'opening:' || user_id, 'opening', 1000000000, 1000000000 FROM users"
        )
        return [r[0] for r in await connection.fetch("SELECT user_id FROM users ORDER BY 1")]
    finally:
        await connection.close()


async def ceiling(dsn: str, users: list[int], count: int) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=CONCURRENCY, max_size=CONCURRENCY)
    try:

        def debit(user_id: int) -> Callable[[], Awaitable[Any]]:
            return lambda: pool.fetchval(DEBIT_SQL, 1, user_id)

        return await timed((debit(users[i % len(users)]) for i in range(count)), CONCURRENCY)
    finally:
        await pool.close()


async def main() -> None:
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    server = server.replace("postgresql://", "postgresql+asyncpg://", 1)
    databases = DatabaseFactory(server)
    fake = YooKassaSandbox()
    await fake.start()
    try:
        url = await databases.create("bench_billing")
        await migrate(url)
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        seeded = await seed_accounts(dsn)
        # The raw ceiling runs on accounts of its own: it moves balances without the ledger.
        raw_users, users = seeded[:ACCOUNTS], seeded[ACCOUNTS:]
        topology = build_topology(f"bench-{uuid.uuid4().hex[:6]}")
        settings = make_settings(
            url,
            os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            topology,
            fake,
            bonus=BonusSettings(enabled=False),
            webhook=WebhookSettings(allowed_networks="127.0.0.1/32"),
        )
        settings.database.pool_size = CONCURRENCY
        billing = build(settings)
        handle = billing.runtime.consumer._handlers[JobCreated]
        job_ids = iter(range(1, 10**9))

        def debit(user_id: int) -> Callable[[], Awaitable[Any]]:
            event = JobCreated(
                job_id=next(job_ids),
                request_id=uuid.uuid4(),
                user_id=user_id,
                telegram_id=1,
                chat_id=1,
                price=1,
                workflow_type="qwen_edit_2511",
            )
            envelope = new_envelope(event, source="bench")
            return lambda: handle(event, envelope)

        await timed((debit(users[i]) for i in range(200)), CONCURRENCY)  # warm-up
        ceiling_per_s = await ceiling(dsn, raw_users, SPREAD_DEBITS)
        hot_ceiling = await ceiling(dsn, raw_users[:1], HOT_DEBITS)
        debits_per_s = await timed(
            (debit(users[i % ACCOUNTS]) for i in range(SPREAD_DEBITS)), CONCURRENCY
        )
        hot_per_s = await timed((debit(users[1]) for _ in range(HOT_DEBITS)), CONCURRENCY)
        webhooks_per_s = await webhooks(billing, fake, users[2:])
        await billing.runtime.engine.dispose()
        drift = await _drift(dsn, users)
        print(f"spread debits over {ACCOUNTS} accounts: {debits_per_s:8.0f}/s "
              f"vs raw asyncpg {ceiling_per_s:8.0f}/s")  # fmt: skip
        print(f"hot-account debits:                  {hot_per_s:8.0f}/s "
              f"vs raw asyncpg {hot_ceiling:8.0f}/s")  # fmt: skip
        print(f"webhooks (verify + API re-fetch + credit): {webhooks_per_s:6.0f}/s")
        print(f"accounts drifting from their ledger after the run: {drift}")
        print(
            f"BENCH debits_per_s={debits_per_s:.0f} hot_debits_per_s={hot_per_s:.0f} "
            f"webhooks_per_s={webhooks_per_s:.0f} ceiling_per_s={ceiling_per_s:.0f} "
            f"ratio={debits_per_s / ceiling_per_s:.2f}"
        )
    finally:
        await fake.stop()
        await databases.drop_all()


async def webhooks(billing: Any, fake: YooKassaSandbox, users: list[int]) -> float:
    from billing import payments
    from billing.domain import creation_key
    from billing.yookassa_gateway import PaymentDraft

    bodies = []
    for user_id in users[:WEBHOOKS]:
        request_id = uuid.uuid4()
        async with billing.runtime.unit_of_work() as uow:
            local = await payments.open_topup(
                uow.session,
                request_id=request_id,
                user_id=user_id,
                amount_kopecks=10000,
                credits=100,
                currency="RUB",
                description="bench",
            )
            draft = PaymentDraft(
                10000, "RUB", "bench", {"payment_id": str(local.id), "user_id": str(user_id)}, "x"
            )
            remote = await billing.topups._provider.create(draft, creation_key(request_id))
            await payments.attach_yookassa(uow.session, local.id, remote.id, "https://x")
            await uow.commit()
        fake.set_status(remote.id, "succeeded")
        bodies.append(json.dumps(fake.notification(remote.id)).encode())

    def post(body: bytes) -> Callable[[], Awaitable[Any]]:
        async def call() -> None:
            scope = {
                "type": "http",
                "method": "POST",
                "path": "/webhooks/yookassa",
                "client": ("127.0.0.1", 1),
                "headers": [(b"content-type", b"application/json")],
            }
            chunks = [{"type": "http.request", "body": body, "more_body": False}]
            answers: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return chunks.pop(0)

            async def send(message: dict[str, Any]) -> None:
                answers.append(message)

            await billing.webhook(scope, receive, send)
            assert answers[0]["status"] == 200, answers

        return call

    return await timed((post(body) for body in bodies), CONCURRENCY)


async def _drift(dsn: str, users: list[int]) -> int:
    connection = await asyncpg.connect(dsn)
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


if __name__ == "__main__":
    asyncio.run(main())
