"""The restore drill of docs/deployment.md, "Backups and restore".

Billing runs on a database of its own under load — top-ups paid and canceled through the
YooKassa webhook, debits and refunds from job events, all at once — while
`postgres/backup.sh`, the script compose's `backup` service runs, dumps it. The dump goes
through `postgres/restore.sh` into a new database, where `imagebot billing audit` must find
every balance equal to its ledger, and every payment paid and ledger row committed before the
backup started must be there as it was.

pg_dump reads one snapshot, taken as it starts. The drill pins that moment instead of racing
it: it holds a lock on a table of its own, which pg_dump waits for after taking its snapshot
(it locks every table it dumps), and moves more money meanwhile. What committed before
pg_dump started must be in the dump; what committed while it waited must not be, not even in
part.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.accounts import LEDGER, PAYMENTS, USERS
from billing.app import Billing, build
from billing.domain import LedgerKind, topup_key
from billing.models import PaymentStatus, PaymentType
from contracts.events import JobFailed, TopUpRequested
from contracts.topology import Topology
from messaging.broker import create_broker, declare_topology
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings
from sandbox.yookassa import YooKassaSandbox
from support.billing_harness import (
    eventually,
    handled,
    make_settings,
    new_job,
    open_account,
    outbox,
    post_webhook,
    scalar,
    send,
)
from support.database import RUN_ID, DatabaseFactory, engine_at, migrated_database

ROOT = Path(__file__).resolve().parents[2]
BACKUP = ROOT / "postgres" / "backup.sh"
RESTORE = ROOT / "postgres" / "restore.sh"
GATE = "backup_drill_gate"
REVISION = "SELECT version_num FROM alembic_version"

Rows = dict[int, tuple[Any, ...]]
Credits = dict[str, tuple[int, int]]


# --- the database server, as libpq's command-line tools see it --------------------------------


@dataclass
class Server:
    url: str
    """The test server (asyncpg URL), at its maintenance database."""
    made: list[str] = field(default_factory=list)

    def libpq(self, database: str | None = None) -> dict[str, str]:
        """The environment that points pg_dump, pg_restore and createdb at the server."""
        url = make_url(self.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env |= {"PGHOST": url.host or "127.0.0.1", "PGPORT": str(url.port or 5432)}
        env |= {"PGUSER": url.username or "postgres", "PGPASSWORD": url.password or ""}
        return env | {"PGDATABASE": database} if database else env

    def new_name(self, label: str) -> str:
        """A database name for a script to create, dropped after the test."""
        self.made.append(f"imagebot_test_{RUN_ID}_{label}_{uuid.uuid4().hex[:6]}")
        return self.made[-1]

    def url_of(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    async def exists(self, database: str) -> bool:
        url = make_url(self.url).set(drivername="postgresql")
        connection = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            found = "SELECT count(*) FROM pg_database WHERE datname = $1"
            return bool(await connection.fetchval(found, database))
        finally:
            await connection.close()


@pytest.fixture
async def server(postgres_server_url: str) -> AsyncIterator[Server]:
    found = Server(postgres_server_url)
    yield found
    url = make_url(postgres_server_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        for name in found.made:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def cut_short(dump: Path, to: Path) -> Path:
    """`dump` without its last 100 bytes, the end of its data: the table of contents (most
    of a small dump) still reads, as after a copy cut short."""
    to.write_bytes(dump.read_bytes()[:-100])
    return to


async def command(*argv: str | Path, env: dict[str, str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a command run to its end."""
    process = await asyncio.create_subprocess_exec(
        *map(str, argv), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def audit(database_url: str) -> tuple[int, str]:
    """`imagebot billing audit` on the database: (exit code, everything it wrote)."""
    imagebot = Path(sys.executable).with_name("imagebot")
    env = {**os.environ, "DATABASE_URL": database_url}
    code, out, err = await command(imagebot, "billing", "audit", env=env)
    return code, out + err


# --- what the drill compares: money rows by primary key ---------------------------------------


@dataclass(frozen=True)
class Money:
    ledger: Rows
    """Every ledger row: id -> (user, key, kind, amount, balance after, job, payment)."""
    paid: Rows
    """Every succeeded payment (top-ups and refunds): id -> (user, YooKassa id, type, amount,
    credits, paid at)."""


async def money(engine: AsyncEngine) -> Money:
    ledger = select(
        LEDGER.c.id,
        LEDGER.c.user_id,
        LEDGER.c.idempotency_key,
        LEDGER.c.kind,
        LEDGER.c.amount,
        LEDGER.c.balance_after,
        LEDGER.c.job_id,
        LEDGER.c.payment_id,
    )
    paid = select(
        PAYMENTS.c.id,
        PAYMENTS.c.user_id,
        PAYMENTS.c.yukassa_payment_id,
        PAYMENTS.c.payment_type,
        PAYMENTS.c.amount,
        PAYMENTS.c.credits,
        PAYMENTS.c.paid_at,
    ).where(PAYMENTS.c.status == PaymentStatus.succeeded)
    async with engine.connect() as connection:
        return Money(
            {row[0]: tuple(row[1:]) for row in await connection.execute(ledger)},
            {row[0]: tuple(row[1:]) for row in await connection.execute(paid)},
        )


# --- the load: billing's money moving in every way it moves, all at once ----------------------


@dataclass
class Load:
    billing: Billing
    sender: EventPublisher
    engine: AsyncEngine
    yookassa: YooKassaSandbox
    accounts: list[tuple[int, int]]
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    moves: int = 0
    """Debits and refunds billing has handled."""
    paid: int = 0
    """Top-ups the webhook credited (committed when it answered)."""
    _progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    _random: random.Random = field(default_factory=lambda: random.Random(21))

    async def until(self, *, moves: int, paid: int) -> None:
        """Until billing has made at least this many moves and credited this many top-ups."""
        async with asyncio.timeout(120), self._progress:
            await self._progress.wait_for(lambda: self.moves >= moves and self.paid >= paid)

    async def _count(self, count: Callable[[], None]) -> None:
        async with self._progress:
            count()
            self._progress.notify_all()

    async def _handled(self, event_id: uuid.UUID) -> None:
        async def done() -> bool:
            return await handled(self.engine, event_id) == 1

        await eventually(done)

    async def debits_and_refunds(self) -> None:
        """A job's debit, and for every other job its refund (the job failed)."""
        while not self.stopping.is_set():
            user_id, telegram_id = self._random.choice(self.accounts)
            job = new_job(user_id, telegram_id, price=self._random.randint(1, 40))
            await self._handled((await send(self.sender, job)).id)
            await self._count(self._moved)
            if job.job_id % 2:
                failed = JobFailed(job_id=job.job_id, user_id=user_id, chat_id=1, reason="x")
                await self._handled((await send(self.sender, failed)).id)
                await self._count(self._moved)

    async def top_ups(self) -> None:
        """A top-up requested as the gateway requests it, then paid (or, one in four,
        canceled) and notified as YooKassa notifies."""
        while not self.stopping.is_set():
            user_id, telegram_id = self._random.choice(self.accounts)
            request_id = uuid.uuid4()
            requested = TopUpRequested(
                request_id=request_id,
                user_id=user_id,
                telegram_id=telegram_id,
                chat_id=telegram_id,
                package_id=self._random.choice(["small", "medium", "large"]),
            )
            await send(self.sender, requested)
            yookassa_id = await self._created(request_id)
            pays = self._random.random() > 0.25
            self.yookassa.set_status(yookassa_id, "succeeded" if pays else "canceled")
            answer = await post_webhook(self.billing, self.yookassa.notification(yookassa_id))
            assert answer == (200, "credit" if pays else "cancel")
            if pays:
                await self._count(self._credited)

    async def _created(self, request_id: uuid.UUID) -> str:
        async def created() -> bool:
            return bool(await outbox(self.engine, "payment.created", request_id=str(request_id)))

        await eventually(created)
        found = select(PAYMENTS.c.yukassa_payment_id).where(PAYMENTS.c.request_id == request_id)
        return str(await scalar(self.engine, found))

    def _moved(self) -> None:
        self.moves += 1

    def _credited(self) -> None:
        self.paid += 1


# --- a billing database of the test's own, and billing running on it -------------------------


@pytest.fixture
async def source_url(databases: DatabaseFactory) -> str:
    return await migrated_database(databases, "backup_source")


@pytest.fixture
async def source(source_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_at(source_url) as engine:
        yield engine


@pytest.fixture
async def fake_yookassa() -> AsyncIterator[YooKassaSandbox]:
    fake = YooKassaSandbox()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def billing(
    source_url: str, amqp_url: str, topology: Topology, fake_yookassa: YooKassaSandbox
) -> AsyncIterator[Billing]:
    """The billing service, started: consuming, relaying its outbox, serving the webhook."""
    service = build(make_settings(source_url, amqp_url, topology, fake_yookassa))
    async with service.app:
        yield service


@pytest.fixture
async def sender(amqp_url: str, topology: Topology) -> AsyncIterator[EventPublisher]:
    broker = create_broker(BrokerSettings(url=amqp_url))  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    await broker.connect()
    yield EventPublisher(broker, topology.events_exchange, source="test", timeout_s=10)
    await broker.stop()


# --- the drill --------------------------------------------------------------------------------


async def back_up_while_held(
    engine: AsyncEngine, load: Load, server: Server, database: str, backup_dir: Path
) -> tuple[str, Money, Money]:
    """Runs backup.sh while the load runs, holding pg_dump just after it took its snapshot
    until more money has moved: (the dump's path, the money committed before pg_dump started,
    the money committed after its snapshot)."""
    before = await money(engine)
    env = server.libpq(database) | {"BACKUP_DIR": str(backup_dir), "BACKUP_KEEP": "3"}
    async with engine.begin() as gate:
        await gate.execute(text(f"LOCK TABLE {GATE} IN ACCESS EXCLUSIVE MODE"))
        backup = asyncio.create_task(command(BACKUP, env=env))
        await pg_dump_waiting(engine, backup)
        held = await money(engine)  # everything the snapshot can have seen, and more
        await load.until(moves=load.moves + 20, paid=load.paid + 3)
        later = await money(engine)
    code, out, err = await backup
    assert code == 0, err
    after = Money(
        {k: v for k, v in later.ledger.items() if k not in held.ledger},
        {k: v for k, v in later.paid.items() if k not in held.paid},
    )
    return out.strip(), before, after


async def pg_dump_waiting(engine: AsyncEngine, backup: asyncio.Task[Any]) -> None:
    """Until pg_dump waits for the gate: its snapshot is taken by then."""
    waiting = text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = CAST(:gate AS regclass)"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )

    async def waits() -> bool:
        if backup.done():
            raise AssertionError(f"the backup ended without waiting: {backup.result()}")
        return bool(await scalar(engine, waiting, gate=GATE))

    await eventually(waits, timeout_s=60)


async def test_a_backup_taken_under_load_restores_every_committed_payment_and_ledger_row(
    billing: Billing,
    sender: EventPublisher,
    source: AsyncEngine,
    source_url: str,
    fake_yookassa: YooKassaSandbox,
    server: Server,
    tmp_path: Path,
) -> None:
    accounts = [await open_account(source, balance=500) for _ in range(6)]
    async with source.begin() as connection:
        await connection.execute(text(f"CREATE TABLE {GATE} ()"))
    load = Load(billing, sender, source, fake_yookassa, accounts)
    database = make_url(source_url).database
    assert database is not None

    async with asyncio.TaskGroup() as workers:
        for _ in range(3):
            workers.create_task(load.debits_and_refunds())
        for _ in range(2):
            workers.create_task(load.top_ups())
        try:
            await load.until(moves=60, paid=6)
            dump, before, after = await back_up_while_held(source, load, server, database, tmp_path)
        finally:
            load.stopping.set()
    final = await money(source)

    assert files(tmp_path) == [Path(dump)]  # one complete dump, nothing partial
    restored_name = server.new_name("restored")
    code, _, err = await command(RESTORE, dump, restored_name, env=server.libpq())
    assert code == 0, err
    restored_url = server.url_of(restored_name)
    code, said = await audit(restored_url)
    assert code == 0, said
    async with engine_at(restored_url) as engine:
        restored = await money(engine)
        users = await count_users(engine)
        revision = await scalar(engine, REVISION)
        balances, ledger_sums = await balances_and_ledger_sums(engine)
        paid_top_ups, credited_top_ups = await top_ups_and_their_credits(engine)
    assert f"audited {users} accounts: 0 drifting" in said

    # Everything committed before the backup started is there, as it was.
    assert before.paid, "the load paid nothing before the backup"
    assert {k: restored.ledger.get(k) for k in before.ledger} == before.ledger
    assert {k: restored.paid.get(k) for k in before.paid} == before.paid
    # The dump is one snapshot: nothing committed after it, and nothing that never was.
    assert after.ledger, "no money moved while pg_dump held its snapshot"
    assert after.paid, "no top-up was paid while pg_dump held its snapshot"
    assert not restored.ledger.keys() & after.ledger.keys()
    assert not restored.paid.keys() & after.paid.keys()
    assert {k: final.ledger.get(k) for k in restored.ledger} == restored.ledger
    assert {k: final.paid.get(k) for k in restored.paid} == restored.paid
    assert users == len(accounts)
    assert revision == await scalar(source, REVISION)
    # Consistent in itself: balances are ledger sums; each paid top-up is credited once.
    assert balances == ledger_sums
    assert paid_top_ups == credited_top_ups


async def count_users(engine: AsyncEngine) -> int:
    return int(await scalar(engine, select(func.count()).select_from(USERS)))


async def balances_and_ledger_sums(engine: AsyncEngine) -> tuple[dict[int, float], dict[int, int]]:
    """Every account's balance, and the sum of its ledger rows (0 without any)."""
    sums = select(LEDGER.c.user_id, func.sum(LEDGER.c.amount)).group_by(LEDGER.c.user_id)
    async with engine.connect() as connection:
        balances = {
            row[0]: row[1]
            for row in await connection.execute(select(USERS.c.user_id, USERS.c.balance))
        }
        totals = dict.fromkeys(balances, 0) | {
            row[0]: int(row[1]) for row in await connection.execute(sums)
        }
    return balances, totals


async def top_ups_and_their_credits(engine: AsyncEngine) -> tuple[Credits, Credits]:
    """Paid top-ups as the ledger should credit them, and the top-up credits in the ledger:
    both as ledger key -> (credits, payment id)."""
    paid = select(PAYMENTS.c.yukassa_payment_id, PAYMENTS.c.credits, PAYMENTS.c.id).where(
        PAYMENTS.c.payment_type == PaymentType.payment,
        PAYMENTS.c.status == PaymentStatus.succeeded,
    )
    credited = select(LEDGER.c.idempotency_key, LEDGER.c.amount, LEDGER.c.payment_id).where(
        LEDGER.c.kind == LedgerKind.topup
    )
    async with engine.connect() as connection:
        expected = {topup_key(row[0]): (row[1], row[2]) for row in await connection.execute(paid)}
        found = {row[0]: (row[1], row[2]) for row in await connection.execute(credited)}
    return expected, found


async def test_an_incomplete_dump_is_refused_and_leaves_no_database(
    source: AsyncEngine, source_url: str, server: Server, tmp_path: Path
) -> None:
    await open_account(source, balance=60)
    database = make_url(source_url).database
    assert database is not None
    env = server.libpq(database) | {"BACKUP_DIR": str(tmp_path / "backups")}
    code, out, err = await command(BACKUP, env=env)
    assert code == 0, err
    cut = cut_short(Path(out.strip()), tmp_path / "cut.dump")
    assert (await command("pg_restore", "--list", cut, env=server.libpq()))[0] == 0

    target = server.new_name("cut")
    code, _, err = await command(RESTORE, cut, target, env=server.libpq())
    assert code != 0
    assert "could not read from input file" in err
    assert not await server.exists(target)

    code, _, _ = await command(RESTORE, out.strip(), target, env=server.libpq())
    assert code == 0  # the same dump whole restores
    assert await server.exists(target)


async def test_backups_keep_the_newest_and_a_failed_one_changes_nothing(
    source: AsyncEngine, source_url: str, server: Server, tmp_path: Path
) -> None:
    database = make_url(source_url).database
    assert database is not None
    env = server.libpq(database) | {"BACKUP_DIR": str(tmp_path), "BACKUP_KEEP": "2"}
    made = []
    for _ in range(3):
        code, out, err = await command(BACKUP, env=env)
        assert code == 0, err
        made.append(Path(out.strip()))
    assert files(tmp_path) == made[1:]
    assert all(path.stat().st_mode & 0o077 == 0 for path in made[1:])  # owner only

    missing = env | {"PGDATABASE": f"imagebot_test_{RUN_ID}_missing"}
    code, _, err = await command(BACKUP, env=missing)
    assert code != 0
    assert "does not exist" in err
    assert files(tmp_path) == made[1:]  # nothing partial left, nothing deleted
