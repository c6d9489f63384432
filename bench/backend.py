"""Backend API at scale: user search and the first page of every list, filters and totals included.

A big shop is seeded straight into the owners' tables (`users`, `jobs`, `payments`, and the
gateway's `gateway_users` and `gateway_jobs` alike: INSERT ... SELECT generate_series, then
VACUUM ANALYZE, as a database that has lived would be), then each read goes the production path:
HTTP -> backend_api (a viewer's API session) -> RPC -> billing, jobs or the gateway ->
PostgreSQL, one request at a time, and its latency is taken at the client.

- search: a user by Telegram id (exact) and by username prefix (any case);
- lists: the first page of users, jobs (no filter; by stage; an adopted row's status; user;
  preset; the last 7 days; stage and preset together), payments (no filter; by status, currency,
  method, user; the last 30 days; status and currency and days together) and the ledger, each
  with its total (and, for payments, the totals per currency);
- the dashboard over 7 and 30 days: users (new per day, active, sources), jobs by outcome and
  preset, money per day and the weekly bonus, from all three owners.

Answers are checked, not only timed: every request must answer 200, an exact Telegram id finds
one user, the payments' count and sums with no filter equal the seeded rows', and the dashboard
counts every seeded user. The last line is `BENCH search_p99_ms=... list_p99_ms=...
dashboard_p99_ms=... rows=...` (rows: users + jobs + payments seeded). The target (issue 19) is
p99 <= 200 ms for searches and first pages at 1,000,000 users, 5,000,000 jobs and 1,000,000
payments: `make bench-backend` runs that size; `--users/--jobs/--payments` smaller. The
dashboard aggregates its whole period, so it is reported on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import uvicorn  # noqa: E402

from backend_api.app import create_app as create_backend  # noqa: E402
from bench.common import (  # noqa: E402
    amqp_url,
    configure,
    dsn,
    percentile,
    throwaway_database,
    throwaway_namespace,
)
from billing.app import create_app as create_billing  # noqa: E402
from bot_gateway.app import create_app as create_gateway  # noqa: E402
from jobs.app import create_app as create_jobs  # noqa: E402
from sandbox.stack import free_port  # noqa: E402
from sandbox.telegram import TOKEN, TelegramSandbox  # noqa: E402

VIEWER, PASSWORD = "bench_viewer", "bench viewer's long password"
CHUNK = 500_000
"""Rows per seeding statement (progress is printed between them)."""
STAGES = ("completed", "completed", "completed", "completed", "failed", "canceled", None)
"""Finished jobs only (the dispatcher and the sweeper have nothing to do), and one in seven an
adopted row with only the seed's status."""


async def seed(database: str, users: int, jobs: int, payments: int) -> None:
    connection = await asyncpg.connect(database)
    try:
        started = time.perf_counter()
        await connection.execute(
            """
            INSERT INTO users (user_id, telegram_id, username, balance, created_at)
            SELECT g, 7000000000 + g,
                   CASE WHEN g % 10 = 0 THEN NULL
                        ELSE (ARRAY['Anna_', 'bob', 'Kate.', 'max', 'Olga'])[1 + g % 5] || g END,
                   g % 500, now() - (g % 1000) * interval '1 hour'
            FROM generate_series(1, $1) AS g
            """,
            users,
        )
        await connection.execute(
            "SELECT setval(pg_get_serial_sequence('users', 'user_id'), $1)", users
        )
        for first in range(1, jobs + 1, CHUNK):
            last = min(first + CHUNK - 1, jobs)
            await connection.execute(
                """
                INSERT INTO jobs (user_id, prompt, status, stage, preset_id, price, workflow_type,
                                  created_at, finished_at)
                SELECT 1 + ((g::bigint * 7919) % $3)::int, 'a prompt', s.status::jobstatus, s.stage,
                       1 + g % 40, 10, 'qwen_edit_2511',
                       now() - (g % 20000) * interval '30 minutes',
                       now() - (g % 20000) * interval '30 minutes' + interval '20 seconds'
                FROM generate_series($1::int, $2::int) AS g
                CROSS JOIN LATERAL (
                    SELECT ($4::text[])[1 + g % 7] AS stage,
                           CASE ($4::text[])[1 + g % 7]
                               WHEN 'completed' THEN 'completed' WHEN 'failed' THEN 'failed'
                               WHEN 'canceled' THEN 'failed' ELSE 'queued' END AS status
                ) AS s
                """,
                first,
                last,
                users,
                list(STAGES),
            )
            print(f"  jobs seeded: {last:,}", file=sys.stderr)
        await connection.execute(
            """
            INSERT INTO payments (user_id, amount, currency, status, payment_type, payment_method,
                                  credits, created_at, paid_at)
            SELECT 1 + ((g::bigint * 104729) % $2)::int,
                   CASE WHEN g % 5 = 0 THEN 50 + g % 200 ELSE 10000 + (g % 50) * 1000 END,
                   CASE WHEN g % 5 = 0 THEN 'XTR' ELSE 'RUB' END,
                   (ARRAY['succeeded', 'succeeded', 'succeeded', 'failed', 'cancelled'])
                       [1 + g % 5]::paymentstatus,
                   CASE WHEN g % 97 = 0 THEN 'refund' ELSE 'payment' END::paymenttype,
                   CASE WHEN g % 5 = 0 THEN 'stars'
                        ELSE (ARRAY['card', 'sbp', 'yoo_money'])[1 + g % 3] END,
                   100, now() - (g % 8760) * interval '1 hour',
                   CASE WHEN g % 5 < 3  -- succeeded ones only, paid when made
                        THEN now() - (g % 8760) * interval '1 hour' END
            FROM generate_series(1, $1) AS g
            """,
            payments,
            users,
        )
        # The gateway's side of the same shop, for the dashboard: who came from where (one in
        # three with no /start source) and one request row per job.
        await connection.execute(
            """
            INSERT INTO gateway_users (telegram_id, user_id, chat_id, language, username, source,
                                       created_at, active_at)
            SELECT telegram_id, user_id, telegram_id, 'ru', username,
                   CASE WHEN user_id % 3 = 0 THEN NULL ELSE 'campaign_' || user_id % 50 END,
                   created_at, greatest(created_at, asked_at)
            FROM users LEFT JOIN (
                SELECT user_id, max(created_at) AS asked_at FROM jobs GROUP BY user_id
            ) AS asked USING (user_id)
            """
        )
        await connection.execute(
            """
            INSERT INTO gateway_jobs (request_id, job_id, telegram_id, user_id, chat_id, language,
                                      preset_id, title, phase, price, created_at)
            SELECT gen_random_uuid(), id, 7000000000 + user_id, user_id, 7000000000 + user_id,
                   'ru', preset_id, 'a preset', 'completed', price, created_at
            FROM jobs
            """
        )
        await connection.execute("VACUUM ANALYZE users")
        await connection.execute("VACUUM ANALYZE jobs")
        await connection.execute("VACUUM ANALYZE payments")
        await connection.execute("VACUUM ANALYZE payment_totals")
        await connection.execute("VACUUM ANALYZE gateway_users")
        await connection.execute("VACUUM ANALYZE gateway_jobs")
        # the seed's gigabytes written out now, not by the checkpointer while reads are timed
        await connection.execute("CHECKPOINT")
        print(
            f"seeded {users:,} users, {jobs:,} jobs, {payments:,} payments "
            f"in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    finally:
        await connection.close()


async def seeded_sums(database: str) -> dict[str, tuple[int, int]]:
    """Per currency, the payments' count and sum, counted in the table itself."""
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch(
            "SELECT currency, count(*), coalesce(sum(amount), 0) FROM payments GROUP BY 1"
        )
    finally:
        await connection.close()
    return {row[0]: (int(row[1]), int(row[2])) for row in rows}


async def create_viewer(database_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagebot",
        *("admin", "create-user", VIEWER, "--role", "viewer"),
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(f"{PASSWORD}\n".encode())
    if process.returncode != 0:
        raise RuntimeError(f"imagebot admin create-user: {output.decode(errors='replace')}")


class Reads:
    """Timed GETs against the running API, every answer checked."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self._http = http
        self.samples: dict[str, list[float]] = {}

    async def get(self, kind: str, path: str, **params: Any) -> Any:
        started = time.perf_counter()
        async with self._http.get(path, params=params) as response:
            body = await response.json()
            elapsed_ms = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise SystemExit(f"{kind}: GET {path} {params} -> {response.status}: {body}")
        self.samples.setdefault(kind, []).append(elapsed_ms)
        return body


async def measure(reads: Reads, args: argparse.Namespace, sums: dict[str, Any]) -> None:
    pick = random.Random(19)
    users = args.users
    now = datetime.now(UTC)
    week = (now - timedelta(days=7)).isoformat()
    month = (now - timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0)

    def a_user() -> int:
        return pick.randint(1, users)

    def a_prefix() -> str:
        user = pick.randint(1, users // 10 * 10 or 1)
        user += 1 if user % 10 == 0 else 0
        name = ("Anna_", "bob", "Kate.", "max", "Olga")[user % 5] + str(user)
        return name[: pick.randint(4, len(name))].swapcase()

    searches: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("search telegram id", "/api/v1/users", lambda: {"telegram_id": 7_000_000_000 + a_user()}),
        ("search username", "/api/v1/users", lambda: {"username": a_prefix()}),
    ]
    lists: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("users", "/api/v1/users", dict),
        ("jobs", "/api/v1/jobs", dict),
        ("jobs by stage", "/api/v1/jobs", lambda: {"status": pick.choice(["failed", "canceled"])}),
        ("jobs by adopted status", "/api/v1/jobs", lambda: {"status": "queued"}),
        ("jobs by user", "/api/v1/jobs", lambda: {"user_id": a_user()}),
        ("jobs by preset", "/api/v1/jobs", lambda: {"preset_id": pick.randint(1, 40)}),
        ("jobs last 7 days", "/api/v1/jobs", lambda: {"created_from": week}),
        (
            "jobs by stage and preset",
            "/api/v1/jobs",
            lambda: {"status": "failed", "preset_id": pick.randint(1, 40)},
        ),
        ("payments", "/api/v1/payments", dict),
        ("payments by status", "/api/v1/payments", lambda: {"status": "failed"}),
        ("payments by currency", "/api/v1/payments", lambda: {"currency": "XTR"}),
        ("payments by method", "/api/v1/payments", lambda: {"method": "sbp"}),
        ("payments by user", "/api/v1/payments", lambda: {"user_id": a_user()}),
        ("payments last 30 days", "/api/v1/payments", lambda: {"created_from": month.isoformat()}),
        (
            "payments by status, currency, days",
            "/api/v1/payments",
            lambda: {
                "status": "succeeded",
                "currency": "RUB",
                "created_from": month.isoformat(),
                "created_until": (month + timedelta(days=14)).isoformat(),
            },
        ),
        ("ledger", "/api/v1/ledger", dict),
    ]
    dashboards: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("dashboard 7 days", "/api/v1/dashboard", lambda: {"days": 7}),
        ("dashboard 30 days", "/api/v1/dashboard", lambda: {"days": 30}),
    ]
    for _kind, path, params in searches + lists + dashboards:  # warm-up, not timed
        await reads.get("warm-up", path, **params())
    found = await reads.get("warm-up", "/api/v1/users", telegram_id=7_000_000_001)
    if found["total"] != 1 or found["items"][0]["user_id"] != 1:
        raise SystemExit(f"search by telegram id found {found['total']} users, not user 1")
    everything = await reads.get("warm-up", "/api/v1/payments")
    answered = {row["currency"]: (row["payments"], row["amount"]) for row in everything["totals"]}
    if answered != sums or everything["total"] != sum(count for count, _ in sums.values()):
        raise SystemExit(f"payments' totals {answered} != the table's {sums}")
    board = await reads.get("warm-up", "/api/v1/dashboard", days=30)
    if board["users"]["users"] != args.users or not board["jobs"]["presets"]:
        raise SystemExit(f"the dashboard counted {board['users']['users']} users, not {args.users}")
    for round_ in range(args.samples):
        for kind, path, params in searches if round_ % 2 == 0 else searches + lists:
            await reads.get(kind, path, **params())
        if round_ % 4 == 0:  # the heaviest read, and the rarest: a page an operator opens
            for kind, path, params in dashboards:
                await reads.get(kind, path, **params())


async def main(args: argparse.Namespace) -> None:
    async with (
        throwaway_database("backend") as url,
        throwaway_namespace("backend") as topology,
    ):
        with TemporaryDirectory(prefix="bench-backend-") as objects:
            await seed(dsn(url), args.users, args.jobs, args.payments)
            sums = await seeded_sums(dsn(url))
            await create_viewer(url)
            telegram = TelegramSandbox()  # the gateway answers the dashboard's users figures
            await telegram.start()
            configure(
                DATABASE_URL=url,
                AMQP_URL=amqp_url(),
                AMQP_NAMESPACE=topology.namespace,
                BONUS_ENABLED="false",
                BILLING_RECONCILE_INTERVAL_S="3600",
                JOBS_DISPATCH_INTERVAL_S="3600",
                JOBS_SWEEP_INTERVAL_S="3600",
                BACKEND_API_SESSION_SECRET="bench-session-secret-" + "x" * 32,
                SERVICE_GRACEFUL_TIMEOUT_S="5",
                TELEGRAM_BOT_TOKEN=TOKEN,
                TELEGRAM_API_URL=telegram.base_url,
                TELEGRAM_MODE="polling",
                TELEGRAM_POLLING_TIMEOUT_S="1",
                STORAGE_BACKEND="local",
                STORAGE_LOCAL_ROOT=objects,
            )
            port = free_port()
            server = uvicorn.Server(
                uvicorn.Config(
                    create_backend(), host="127.0.0.1", port=port, log_config=None, lifespan="on"
                )
            )
            async with create_billing(), create_jobs(), create_gateway():
                serving = asyncio.create_task(server.serve())
                try:
                    await until(lambda: server.started, "the backend API to start")
                    base = f"http://127.0.0.1:{port}"
                    async with aiohttp.ClientSession(base_url=base) as anonymous:
                        body = {"login": VIEWER, "password": PASSWORD}
                        async with anonymous.post("/api/v1/sessions", json=body) as response:
                            if response.status != 201:
                                raise SystemExit(
                                    f"sign-in: {response.status} {await response.text()}"
                                )
                            token = (await response.json())["token"]
                    headers = {"Authorization": f"Bearer {token}"}
                    async with aiohttp.ClientSession(base_url=base, headers=headers) as http:
                        reads = Reads(http)
                        await measure(reads, args, sums)
                finally:
                    server.should_exit = True
                    await serving
            await telegram.stop()
    report(reads.samples, args.users + args.jobs + args.payments)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def report(samples: dict[str, list[float]], rows: int) -> None:
    samples.pop("warm-up", None)

    groups: dict[str, list[float]] = {"search": [], "list": [], "dashboard": []}
    for kind, kept in samples.items():
        group = kind.split()[0] if kind.split()[0] in ("search", "dashboard") else "list"
        groups[group] += kept
    searches, lists, dashboards = groups["search"], groups["list"], groups["dashboard"]
    for kind, kept in samples.items():
        print(
            f"{kind:36s} n={len(kept):4d} p50={percentile(kept, 0.5):7.1f} ms "
            f"p99={percentile(kept, 0.99):7.1f} ms max={max(kept):7.1f} ms"
        )
    search_p99, list_p99 = percentile(searches, 0.99), percentile(lists, 0.99)
    verdict = "met" if max(search_p99, list_p99) <= 200 else "NOT met"
    print(f"the target (p99 <= 200 ms for searches and first pages) is {verdict} at {rows:,} rows")
    dashboard_p99 = percentile(dashboards, 0.99)
    print(f"the dashboard (7 and 30 days, all three owners' figures): p99 {dashboard_p99:.1f} ms")
    print(
        f"BENCH search_p99_ms={search_p99:.1f} list_p99_ms={list_p99:.1f} "
        f"dashboard_p99_ms={dashboard_p99:.1f} rows={rows}"
    )


def _run(main_: Callable[[argparse.Namespace], Coroutine[Any, Any, None]]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="users seeded")
    parser.add_argument("--jobs", type=int, default=5_000_000, help="jobs seeded")
    parser.add_argument("--payments", type=int, default=1_000_000, help="payments seeded")
    parser.add_argument(
        "--samples", type=int, default=40, help="rounds: searches every round, lists every other"
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.disable(logging.INFO)
    asyncio.run(main_(arguments))


if __name__ == "__main__":
    _run(main)
