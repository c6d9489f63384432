"""`make chaos`: users keep the whole system busy while its parts are killed, then the books
must balance.

The whole stack runs as processes (`SandboxStack`, two replicas of every service, so traffic
keeps flowing while one replica is down) on a throwaway database and broker namespace. Users in
the sandbox Telegram ask for jobs through the real dialogue (photo → category → preset →
Start) and top up through /topup and the payment page, many at once; a user who sees no answer
within a while taps again, as a person would (a double tap is safe: request ids derive from
what was tapped). Meanwhile faults come on a schedule: each service's replicas in turn are
SIGKILLed and started again, RabbitMQ is restarted (stop_app/start_app), PostgreSQL is
restarted (fast shutdown). Then, once the system is quiet (bounded wait), the invariants:

- every job is in a final state (completed, failed, canceled) and every Start a user tapped
  has exactly one job, whose outcome the user was told;
- per job, the ledger holds exactly one debit of its price if it completed, and for a failed or
  canceled job a refund for every debit; each balance is its welcome credits plus its top-ups
  minus its completed jobs; `imagebot billing audit` is clean;
- every payment the sandbox YooKassa marked succeeded is credited exactly once, and nothing
  else is; every user's one top-up is one payment;
- nothing is left in any queue, outbox or the gateway's Telegram mailbox, and the DLQs are empty.

Any violation is printed in detail and the exit status is 1. Last line:
`CHAOS jobs=… lost=… double_charged=… double_credited=… audit=ok|FAILED`.

Restarting PostgreSQL or RabbitMQ breaks whatever else runs on this machine's servers: before
each, the suite waits until `pgrep -af "pytest|bench/"` shows nobody but itself, and skips the
fault (exit status 1) if the machine stays busy. `--faults services` runs service kills only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import aio_pika  # noqa: E402
import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import common  # noqa: E402
from contracts.topology import build_topology  # noqa: E402
from imagebot.database import drop_database  # noqa: E402
from imagebot.processes import SERVICES, ServiceProcess  # noqa: E402
from messaging.broker import delete_topology  # noqa: E402
from sandbox.stack import SandboxStack, StackConfig  # noqa: E402
from sandbox.story import WELCOME_CREDITS, new_user  # noqa: E402
from sandbox.telegram import Call, TelegramSandbox, TgUser  # noqa: E402
from sandbox.user import picture  # noqa: E402

log = logging.getLogger("chaos")

CATEGORY = "фильтры"
PRESETS = {"Чёрно-белое": 10, "Тиснение": 10, "Карандашный контур": 20}
PACKAGE, PACKAGE_CREDITS = "100 кредитов за 100 ₽", 100
FINAL_STAGES = ("completed", "failed", "canceled")
# What the status message says once a job is over (done; failed or canceled, refunded or not;
# refused by jobs; not enough credits).
FINAL_TEXTS = ("готово", "Ничего не списано", "вернутся на баланс", "вернётся на баланс")

# What the bot says when a tap or a message did not get through: try again, or (for a button
# whose dialogue is gone) start the job over, as a person would.
TROUBLE = ("Что-то пошло не так", "Сервис сейчас занят", "Не удалось скачать", "Слишком много")
STALE = "Эта кнопка устарела"
UNDER_WAY = "Это задание уже запущено"
"""A Start tapped again whose job exists: wait for that job's outcome."""
RESTARTS = 5

STEP_TIMEOUT_S = 20.0
"""How long a user waits for an answer before tapping (or sending) again."""
STEP_TRIES = 15
OUTCOME_TIMEOUT_S = 600.0
"""How long a user waits for a started job's outcome before giving up on it."""
QUIET_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--jobs-per-user", type=int, default=10)
    parser.add_argument(
        "--faults",
        choices=("all", "services", "none"),
        default="all",
        help="all: service kills, RabbitMQ and PostgreSQL restarts; services: kills only",
    )
    parser.add_argument(
        "--fault-gap-s",
        type=float,
        default=3.0,
        help="seconds between one fault's recovery and the next fault",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) after")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    sys.exit(asyncio.run(run(args)))


# --- watching the sandbox Telegram ------------------------------------------------------------


class Chats:
    """What the bot sent, per chat, as it happens; users wait on their own chat only."""

    def __init__(self, telegram: TelegramSandbox) -> None:
        self._telegram = telegram
        self._seen = 0
        self.by_chat: defaultdict[int, list[Call]] = defaultdict(list)
        self.queries: dict[str, int] = {}
        """Callback query id → chat, so the bot's alerts reach the chat that tapped."""
        self._changed: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="chaos.chats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            calls = self._telegram.calls
            while self._seen < len(calls):
                call = calls[self._seen]
                self._seen += 1
                chat = call.chat_id
                if chat is None and call.method == "answerCallbackQuery":
                    chat = self.queries.get(str(call.params.get("callback_query_id")))
                if chat is not None:
                    self.by_chat[chat].append(call)
                    self._changed[chat].set()
            await asyncio.sleep(0.02)

    async def wait(
        self, chat: int, since: int, match: Callable[[Call], bool], timeout_s: float
    ) -> Call | None:
        """The first call into `chat` from position `since` on that `match`es, or None."""
        deadline = time.monotonic() + timeout_s
        checked = since
        while True:
            calls = self.by_chat[chat]
            for call in calls[checked:]:
                if match(call):
                    return call
            checked = len(calls)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            event = self._changed[chat]
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)


def says(part: str) -> Callable[[Call], bool]:
    return lambda call: call.method != "answerCallbackQuery" and part in call.text


def edits(message_id: int, parts: tuple[str, ...] = ()) -> Callable[[Call], bool]:
    def match(call: Call) -> bool:
        return (
            call.method == "editMessageText"
            and int(call.params.get("message_id") or 0) == message_id
            and (not parts or any(part in call.text for part in parts))
        )

    return match


# --- users --------------------------------------------------------------------------------


@dataclass
class Tally:
    starts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    """Jobs started whose outcome the user never saw."""
    gave_up: int = 0
    """Dialogue steps that got no answer after every retry (no job was started)."""
    retries: Counter[str] = field(default_factory=Counter)
    topups_asked: int = 0
    topups_confirmed: int = 0
    payment_ids: list[str] = field(default_factory=list)


class GaveUpError(RuntimeError):
    pass


class StaleError(RuntimeError):
    """The bot calls the button outdated: the dialogue behind it is gone."""


class Player:
    """One Telegram user: `jobs` jobs one after another, a top-up after `topup_after`."""

    def __init__(
        self,
        telegram: TelegramSandbox,
        chats: Chats,
        tally: Tally,
        user: TgUser,
        plan: list[tuple[str, bytes]],
        topup_after: int,
    ) -> None:
        self.telegram, self.chats, self.tally, self.user = telegram, chats, tally, user
        self.plan, self.topup_after = plan, topup_after
        self.starts: list[int] = []
        """The confirm messages whose Start this user tapped (one job each)."""

    async def play(self) -> None:
        for n, (preset, photo) in enumerate(self.plan):
            if n == self.topup_after:
                await self._attempt(self.topup())
            await self._attempt(self.job_over_and_over(preset, photo))

    async def job_over_and_over(self, preset: str, photo: bytes) -> None:
        for _ in range(RESTARTS):
            try:
                await self.job(preset, photo)
                return
            except StaleError:
                self.tally.retries["start over"] += 1
        raise GaveUpError(f"the dialogue went stale {RESTARTS} times")

    async def _attempt(self, work: Awaitable[None]) -> None:
        try:
            await work
        except GaveUpError as exc:
            self.tally.gave_up += 1
            log.warning("user %s gave up: %s", self.user.id, exc)

    async def step(
        self, what: str, act: Callable[[], object], match: Callable[[Call], bool]
    ) -> Call:
        """Do `act` until an answer that `match`es comes (any answer since the first try)."""
        calls = self.chats.by_chat[self.user.id]
        since = len(calls)
        for attempt in range(STEP_TRIES):
            if attempt:
                self.tally.retries[what] += 1
            act()
            answer = await self.chats.wait(
                self.user.id, since, lambda c: match(c) or _troubled(c), STEP_TIMEOUT_S
            )
            if answer is not None and not _troubled(answer):
                return answer
            if answer is not None:
                since = len(calls)  # the next try looks past this answer
                self.tally.retries[f"{what}: {answer.text[:24]}"] += 1
                if STALE in answer.text:
                    raise StaleError(what)
                # "try again": a person waits a moment first, longer each time
                await asyncio.sleep(min(0.5 * (attempt + 1), 5.0))
        last = [(c.method, c.text[:60]) for c in calls[-5:]]
        raise GaveUpError(f"no answer to {what} after {STEP_TRIES} tries; last: {last}")

    def press(self, call: Call, label: str) -> Callable[[], object]:
        assert call.message_id is not None
        data = call.button(label)["callback_data"]

        def tap() -> None:
            query = self.telegram.press(self.user, call.message_id or 0, data)
            self.chats.queries[query] = self.user.id

        return tap

    async def job(self, preset: str, photo: bytes) -> None:
        send = lambda: self.telegram.send_photo(self.user, photo)  # noqa: E731
        answer = await self.step(
            "photo",
            send,
            lambda c: says("Фото получено")(c) or says("Стоимость:")(c) or says(DAMAGED)(c),
        )
        if DAMAGED in answer.text:  # refused at upload, before any job: nothing to pay
            self.tally.outcomes["damaged photo refused at upload"] += 1
            return
        confirm = answer  # a preset still chosen from before: the bot offers it at once
        if "Стоимость:" not in answer.text:
            presets = await self.step(
                "category", self.press(answer, CATEGORY), says("выберите пресет")
            )
            confirm = await self.step("preset", self.press(presets, preset), says("Стоимость:"))
        assert confirm.message_id is not None
        since = len(self.chats.by_chat[self.user.id])
        started = lambda c: edits(confirm.message_id)(c) or says(UNDER_WAY)(c)  # noqa: E731
        await self.step("start", self.press(confirm, "Запустить"), started)
        self.tally.starts += 1
        self.starts.append(confirm.message_id)
        outcome = await self.chats.wait(
            self.user.id, since, edits(confirm.message_id, FINAL_TEXTS), OUTCOME_TIMEOUT_S
        )
        if outcome is None:
            self.tally.unanswered += 1
            log.warning("user %s never saw the outcome of %s", self.user.id, confirm.message_id)
            return
        self.tally.outcomes[_outcome(outcome.text)] += 1

    async def topup(self) -> None:
        self.tally.topups_asked += 1
        packages = await self.step(
            "/topup", lambda: self.telegram.say(self.user, "/topup"), says("Выберите пакет")
        )
        link = await self.step("package", self.press(packages, PACKAGE), says("Оплатите"))
        url = link.button("₽")["url"]
        self.tally.payment_ids.append(url.rstrip("/").rsplit("/", 1)[-1])
        since = len(self.chats.by_chat[self.user.id])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.post(url) as answer:
                        if answer.status < 300:
                            break
                await asyncio.sleep(1)
        paid = await self.chats.wait(self.user.id, since, says("Платёж получен"), OUTCOME_TIMEOUT_S)
        if paid is not None:
            self.tally.topups_confirmed += 1


DAMAGED = "повреждено"
"""The gateway's answer to a photo that does not decode whole."""


def _troubled(call: Call) -> bool:
    return STALE in call.text or any(part in call.text for part in TROUBLE)


def _outcome(text: str) -> str:
    if "готово" in text:
        return "completed"
    if "Не хватает" in text:
        return "not enough credits"
    if "вернутся на баланс" in text:
        return "failed, refunded"
    if "вернётся на баланс" in text:
        return "canceled"
    return "failed, nothing charged"


def plans(users: int, jobs: int) -> list[list[tuple[str, bytes]]]:
    """Mostly 10-credit presets; every 20th job a truncated photo (the gateway decodes uploads
    whole and refuses it before any job: nothing charged); every 10th user picks the 20-credit
    preset only and runs out of credits."""
    photos = [picture((160 + 16 * n, 120 + 8 * n)) for n in range(8)]
    broken = photos[0][: len(photos[0]) // 3]
    cheap = ("Чёрно-белое", "Тиснение")
    counter = itertools.count()
    result = []
    for u in range(users):
        plan = []
        for j in range(jobs):
            n = next(counter)
            preset = "Карандашный контур" if u % 10 == 9 or j == 5 else cheap[n % 2]
            photo = broken if n % 20 == 7 else photos[n % len(photos)]
            plan.append((preset, photo))
        result.append(plan)
    return result


# --- faults -----------------------------------------------------------------------------------


@dataclass
class FaultRecord:
    name: str
    at_s: float
    down_s: float = 0.0
    """How long the thing itself was down (kill → ready; broker/database stop → start)."""
    recovered_s: float | None = None
    """From the fault to every replica ready again; None if they never were."""
    note: str = ""


def others_running() -> list[str]:
    """`pgrep -af "pytest|bench/"` minus this process and its ancestors."""
    mine = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        mine.add(pid)
    found = subprocess.run(
        ["pgrep", "-af", "pytest|bench/"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return [line for line in found if int(line.split()[0]) not in mine]


async def wait_quiet_machine(timeout_s: float = 300.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (others := others_running()) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(5)
    return others


async def shell(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {output.decode(errors='replace')}")


async def all_ready(processes: list[ServiceProcess]) -> bool:
    try:
        await asyncio.gather(*(p.ready(READY_TIMEOUT_S) for p in processes))
    except Exception as exc:  # a replica that never recovers is a finding, not a crash
        log.error("not every replica recovered: %s", exc)
        return False
    return True


class Chaos:
    """The fault schedule, run while the users play."""

    def __init__(self, stack: SandboxStack, kinds: str, gap_s: float, began: float) -> None:
        self.stack, self.gap_s, self.began = stack, gap_s, began
        self.records: list[FaultRecord] = []
        self.skipped: list[str] = []
        self.schedule: list[tuple[str, Callable[[FaultRecord], Awaitable[None]]]] = []
        for replica in range(2):
            for n, service in enumerate(SERVICES):
                process = stack.processes[service][replica % len(stack.processes[service])]
                self.schedule.append((f"SIGKILL {process.name}", self._killer(process)))
                # Both outages in the first round, while the load is high: a faster system
                # finishes the load sooner, and a restart after it would prove little.
                if kinds == "all" and replica == 0 and n == 1:
                    self.schedule.append(("restart RabbitMQ", self.restart_rabbitmq))
                if kinds == "all" and replica == 0 and n == 2:
                    self.schedule.append(("restart PostgreSQL", self.restart_postgresql))

    async def run(self) -> None:
        for name, fault in self.schedule:
            await asyncio.sleep(self.gap_s)
            record = FaultRecord(name, time.monotonic() - self.began)
            print(f"  [{record.at_s:6.1f}s] fault: {name}", flush=True)
            await fault(record)
            if record.note.startswith("skipped"):
                self.skipped.append(f"{name}: {record.note}")
            else:
                self.records.append(record)
            recovered = "NEVER" if record.recovered_s is None else f"{record.recovered_s:.1f}s"
            print(
                f"  [{time.monotonic() - self.began:6.1f}s] {name}: down {record.down_s:.1f}s,"
                f" all replicas ready after {recovered} {record.note}",
                flush=True,
            )

    def _killer(self, process: ServiceProcess) -> Callable[[FaultRecord], Awaitable[None]]:
        async def kill(record: FaultRecord) -> None:
            started = time.monotonic()
            await process.kill()
            await process.start()
            ok = await all_ready([process])
            record.down_s = time.monotonic() - started
            record.recovered_s = record.down_s if ok else None

        return kill

    async def _outage(
        self, record: FaultRecord, stop: list[list[str]], start: list[list[str]]
    ) -> None:
        if others := await wait_quiet_machine():
            record.note = f"skipped: others are running: {others}"
            return
        started = time.monotonic()
        record.at_s = started - self.began  # after any wait for a quiet machine
        for command in stop:
            await shell(*command)
        for command in start:
            await shell(*command)
        record.down_s = time.monotonic() - started
        ok = await all_ready(self.stack.all_processes)
        record.recovered_s = time.monotonic() - started if ok else None

    async def restart_rabbitmq(self, record: FaultRecord) -> None:
        await self._outage(
            record,
            [["rabbitmqctl", "stop_app"]],
            [["rabbitmqctl", "start_app"], ["rabbitmqctl", "await_startup"]],
        )

    async def restart_postgresql(self, record: FaultRecord) -> None:
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        await self._outage(
            record,
            [],
            [
                [
                    "pg_ctlcluster", "--skip-systemctl-redirect", version, "main",
                    "restart", "-m", "fast",
                ]
            ],
        )  # fmt: skip


# --- the invariants ---------------------------------------------------------------------------


@dataclass
class Findings:
    violations: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)

    def fail(self, what: str, details: list[Any], limit: int = 10) -> None:
        if details:
            shown = "; ".join(str(d) for d in details[:limit])
            more = f" (+{len(details) - limit} more)" if len(details) > limit else ""
            self.violations.append(f"{what}: {len(details)}: {shown}{more}")


async def leftovers(db: asyncpg.Connection, amqp_url: str, namespace: str) -> dict[str, int]:
    """Everything still on its way: unfinished jobs, unsent outbox rows and Telegram mail,
    messages in any queue or DLQ of the namespace."""
    left: dict[str, int] = {}
    left["jobs not final"] = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE stage IS NULL OR stage <> ALL($1::text[])",
        list(FINAL_STAGES),
    )
    for owner in ("billing", "jobs", "bot_gateway"):
        left[f"{owner}_outbox unsent"] = await db.fetchval(
            f"SELECT count(*) FROM {owner}_outbox WHERE published_at IS NULL"
        )
    left["gateway_outbound unsent"] = await db.fetchval(
        "SELECT count(*) FROM gateway_outbound WHERE sent_at IS NULL"
    )
    left.update(await queue_counts(amqp_url, namespace))
    return {name: count for name, count in left.items() if count}


async def queue_counts(amqp_url: str, namespace: str) -> dict[str, int]:
    topology = build_topology(namespace)
    counts = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for spec in topology.queues:
            for name in (spec.name, spec.dlq):
                queue = await channel.declare_queue(name, passive=True)
                counts[name] = queue.declaration_result.message_count or 0
    return counts


async def wait_until_quiet(dsn: str, amqp_url: str, namespace: str) -> dict[str, int]:
    """Until nothing is on its way, twice in a row (bounded); what is still there."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    calm = 0
    left: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            db = await asyncpg.connect(dsn)
            try:
                left = await leftovers(db, amqp_url, namespace)
            finally:
                await db.close()
        except (OSError, asyncpg.PostgresError, aio_pika.exceptions.AMQPError) as exc:
            left = {f"cannot look: {exc!r}": 1}
        dead = {name: n for name, n in left.items() if name.endswith(".dlq")}
        calm = calm + 1 if not left or left == dead else 0
        if calm >= 3:
            break
        await asyncio.sleep(2)
    return left


async def check(
    stack: SandboxStack, dsn: str, players: list[Player], tally: Tally, left: dict[str, int]
) -> Findings:
    found = Findings()
    db = await asyncpg.connect(dsn)
    try:
        await check_jobs(db, players, found)
        await check_money(db, stack, players, found)
    finally:
        await db.close()
    found.fail("left on its way after the quiet wait", sorted(left.items()))
    found.fail(
        "jobs started whose outcome the user never saw", [tally.unanswered] * bool(tally.unanswered)
    )
    found.fail(
        "dialogue steps never answered after every retry", [tally.gave_up] * bool(tally.gave_up)
    )
    try:
        audit = (await stack.imagebot("billing", "audit")).strip()
        found.figures["audit_ok"] = int("0 drifting" in audit)
    except RuntimeError as exc:
        audit = str(exc)
        found.figures["audit_ok"] = 0
    print(f"billing audit: {audit.splitlines()[-1] if audit else '?'}", flush=True)
    if not found.figures["audit_ok"]:
        found.violations.append(f"billing audit: {audit}")
    return found


async def check_jobs(db: asyncpg.Connection, players: list[Player], found: Findings) -> None:
    rows = await db.fetch(
        """
        SELECT j.id, j.telegram_id, j.stage, j.price, j.error,
               coalesce(sum(-l.amount) FILTER (WHERE l.kind = 'debit'), 0) AS debited,
               count(l.id) FILTER (WHERE l.kind = 'debit') AS debits,
               coalesce(sum(l.amount) FILTER (WHERE l.kind = 'refund'), 0) AS refunded,
               count(l.id) FILTER (WHERE l.kind = 'refund') AS refunds
        FROM jobs j
        LEFT JOIN billing_ledger l
          ON l.idempotency_key IN ('debit:job:' || j.id, 'refund:job:' || j.id)
        GROUP BY j.id
        """
    )
    stages = Counter(row["stage"] for row in rows)
    found.figures["jobs"] = len(rows)
    print(f"jobs by stage: {dict(stages)}", flush=True)
    failures = Counter((row["error"] or "")[:60] for row in rows if row["stage"] == "failed")
    print(f"failed jobs by error: {dict(failures)}", flush=True)
    not_final = [(r["id"], r["stage"]) for r in rows if r["stage"] not in FINAL_STAGES]
    per_user = Counter(row["telegram_id"] for row in rows)
    missing, extra = [], []
    for player in players:
        have, asked = per_user.get(player.user.id, 0), len(player.starts)
        if have < asked:
            missing.append(f"user {player.user.id}: {asked} started, {have} jobs")
        if have > asked:
            extra.append(f"user {player.user.id}: {asked} started, {have} jobs")
    overcharged, uncharged = [], []
    for row in rows:
        debited, refunded, price = row["debited"], row["refunded"], row["price"] or 0
        net = debited - refunded
        label = f"job {row['id']} {row['stage']} price {price} debits {row['debits']}"
        label += f" refunds {row['refunds']}"
        if row["debits"] > 1 or row["refunds"] > 1:
            overcharged.append(label)
        elif row["stage"] == "completed":
            if debited > price:
                overcharged.append(label)
            elif debited < price or row["refunds"]:
                uncharged.append(label)
        elif row["stage"] in FINAL_STAGES and net != 0:
            (overcharged if net > 0 else uncharged).append(label)
    found.figures["lost"] = len(not_final) + len(missing)
    found.figures["double_charged"] = len(overcharged) + len(extra)
    found.fail("jobs not in a final state", not_final)
    found.fail("Starts without a job", missing)
    found.fail("more jobs than Starts", extra)
    found.fail("jobs charged more than once or not refunded", overcharged)
    found.fail("jobs completed without their charge, or refunded", uncharged)


async def check_money(
    db: asyncpg.Connection, stack: SandboxStack, players: list[Player], found: Findings
) -> None:
    succeeded = {
        pid for pid, payment in stack.yookassa.payments.items() if payment["status"] == "succeeded"
    }
    credits = await db.fetch(
        "SELECT idempotency_key, amount FROM billing_ledger WHERE kind = 'topup'"
    )
    credited = Counter(row["idempotency_key"].removeprefix("topup:") for row in credits)
    double = [f"{pid} ×{n}" for pid, n in credited.items() if n > 1]
    wrong = [pid for pid in credited if pid not in succeeded]
    uncredited = sorted(succeeded - set(credited))
    payments = await db.fetch(
        "SELECT u.telegram_id, count(*) AS n FROM payments p JOIN users u USING (user_id)"
        " WHERE p.yukassa_payment_id IS NOT NULL GROUP BY u.telegram_id"
    )
    several = [f"user {r['telegram_id']}: {r['n']} payments" for r in payments if r["n"] > 1]
    found.figures["payments_succeeded"] = len(succeeded)
    found.figures["double_credited"] = len(double) + len(several)
    found.fail("payments credited more than once", double)
    found.fail("one top-up, several payments", several)
    found.fail("credits for payments YooKassa never confirmed", wrong)
    found.fail("confirmed payments never credited", uncredited)
    balances = await db.fetch(
        """
        SELECT u.telegram_id, u.balance,
               (SELECT coalesce(sum(j.price), 0) FROM jobs j
                 WHERE j.user_id = u.user_id AND j.stage = 'completed') AS spent,
               (SELECT coalesce(sum(l.amount), 0) FROM billing_ledger l
                 WHERE l.user_id = u.user_id AND l.kind = 'topup') AS topped_up
        FROM users u
        """
    )
    off = [
        f"user {r['telegram_id']}: balance {r['balance']} != {WELCOME_CREDITS} + "
        f"{r['topped_up']} - {r['spent']}"
        for r in balances
        if r["balance"] != WELCOME_CREDITS + r["topped_up"] - r["spent"]
    ]
    found.fail("balances that are not welcome + top-ups - completed jobs", off)


# --- the run ----------------------------------------------------------------------------------


async def progress(players: list[Player], tally: Tally, began: float, every_s: float = 15) -> None:
    while True:
        await asyncio.sleep(every_s)
        print(
            f"  [{time.monotonic() - began:6.1f}s] load: {tally.starts} jobs started, "
            f"{sum(tally.outcomes.values())} answered, {tally.topups_confirmed} top-ups paid, "
            f"retries {dict(tally.retries)}",
            flush=True,
        )


async def run(args: argparse.Namespace) -> int:
    amqp_url = common.amqp_url()
    run_id = uuid.uuid4().hex[:8]
    namespace = f"chaos-{run_id}"
    work_dir = Path(tempfile.mkdtemp(prefix=f"imagebot-chaos-{run_id}-"))
    # created (and migrated) by the stack's `imagebot migrate`, dropped below
    database_url = (
        make_url(common.database_server_url())
        .set(drivername="postgresql", database=common.unique("chaos"))
        .render_as_string(hide_password=False)
    )
    config = StackConfig(
        database_url=database_url,
        amqp_url=amqp_url,
        namespace=namespace,
        work_dir=work_dir,
        replicas=2,
        # no weekly bonus in the books; smaller pools: 8 processes share max_connections
        env={"BONUS_ENABLED": "false", "DATABASE_POOL_SIZE": "5"},
        service_env={
            "bot_gateway": {
                "DELIVERY_GLOBAL_RATE_PER_S": "1000",
                "DELIVERY_CHAT_INTERVAL_S": "0",
                "DELIVERY_EDIT_INTERVAL_S": "0.5",
                "GATEWAY_FLOOD_MESSAGES": "1000",
            },
            "jobs": {"JOBS_RETRY_BACKOFF_S": "1"},
            "gpu_runner": {
                "GPU_PILLOW_FILTER_STEPS": "2",
                "GPU_PILLOW_FILTER_STEP_DELAY_S": "0.05",
            },
        },
    )
    print(
        f"chaos: {args.users} users × {args.jobs_per_user} jobs, {args.users} top-ups; "
        f"2 replicas of every service (traffic flows while one is down); faults: {args.faults}; "
        f"database {database_url.rsplit('/', 1)[-1]}, namespace {namespace}, logs {work_dir}",
        flush=True,
    )
    found = Findings()
    chaos: Chaos | None = None
    tally = Tally()
    this = asyncio.current_task()
    assert this is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop the stack and drop what we made
        asyncio.get_running_loop().add_signal_handler(signum, this.cancel)
    try:
        async with SandboxStack(config) as stack:
            found, chaos = await drive(stack, args, database_url, tally)
    finally:
        await delete_topology(amqp_url, build_topology(namespace))
        await drop_database(database_url)
    ok = not found.violations and not (chaos and chaos.skipped)
    if not ok or args.keep:
        print(f"logs kept in {work_dir}", flush=True)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    figures = found.figures
    print(
        f"CHAOS jobs={figures.get('jobs', 0)} lost={figures.get('lost', '?')} "
        f"double_charged={figures.get('double_charged', '?')} "
        f"double_credited={figures.get('double_credited', '?')} "
        f"audit={'ok' if figures.get('audit_ok') and ok else 'FAILED'}",
        flush=True,
    )
    return 0 if ok else 1


async def drive(
    stack: SandboxStack, args: argparse.Namespace, dsn: str, tally: Tally
) -> tuple[Findings, Chaos]:
    began = time.monotonic()
    chats = Chats(stack.telegram)
    chats.start()
    players = [
        Player(stack.telegram, chats, tally, new_user(name=f"u{n}"), plan, topup_after=3)
        for n, plan in enumerate(plans(args.users, args.jobs_per_user))
    ]
    chaos = Chaos(stack, args.faults, args.fault_gap_s, began)
    reporter = asyncio.create_task(progress(players, tally, began))
    faults = asyncio.create_task(chaos.run()) if args.faults != "none" else None
    await asyncio.gather(*(player.play() for player in players))
    load_s = time.monotonic() - began
    print(
        f"load done in {load_s:.1f}s: {tally.starts} jobs started, outcomes "
        f"{dict(tally.outcomes)}, unanswered {tally.unanswered}, gave up {tally.gave_up}, "
        f"top-ups {tally.topups_confirmed}/{tally.topups_asked} confirmed, "
        f"retries {dict(tally.retries)}",
        flush=True,
    )
    if faults is not None:
        if not faults.done():
            print("  (load finished before the fault schedule; the rest runs now)", flush=True)
        await faults
    reporter.cancel()
    quiet_began = time.monotonic()
    left = await wait_until_quiet(dsn, stack.config.amqp_url, stack.config.namespace)
    print(f"quiet after {time.monotonic() - quiet_began:.1f}s; left: {left or 'nothing'}")
    await chats.stop()
    found = await check(stack, dsn, players, tally, left)
    print("faults (at; down; all replicas ready again after):", flush=True)
    for record in chaos.records:
        recovered = "NEVER" if record.recovered_s is None else f"{record.recovered_s:.1f}s"
        when = "under load" if record.at_s < load_s else "after the load"
        print(f"  {record.at_s:6.1f}s  {record.name:28} down {record.down_s:5.1f}s  "
              f"ready {recovered:>6}  {when}", flush=True)  # fmt: skip
        if record.recovered_s is None:
            found.violations.append(f"{record.name}: not every replica recovered")
    for skipped in chaos.skipped:
        print(f"  SKIPPED {skipped}", flush=True)
    for violation in found.violations:
        print(f"VIOLATION {violation}", flush=True)
    return found, chaos


if __name__ == "__main__":
    main()
