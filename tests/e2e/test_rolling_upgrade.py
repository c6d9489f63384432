"""The rolling-upgrade drill: the previous release's services replaced by this checkout's, one
by one, on one database and broker, while users keep playing.

The previous release is the commit `tests/e2e/previous_release` names, taken from this
repository's history (the drill fails, never skips, when a clone lacks it). The database is
first migrated by that release's `imagebot migrate`, its four services serve the sandboxes, and
three users play the paid steps of the story over and over: a preset on a photo, prompt-only
generation, a top-up paid on YooKassa's page, /balance. Then, as docs/deployment.md prescribes:
this release's `imagebot migrate`, and each service in `UPGRADE_ORDER` gets a new instance
beside the old one (both serving while the users make progress) before the old one is stopped
with SIGTERM. Once every user played a whole round on the new release alone, the dead-letter
queues are replayed with this release's `imagebot dlq replay`; then nothing may be lost: every
job finished and delivered once, every top-up credited once, the ledger audit clean, every
queue and DLQ empty.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from sqlalchemy import func, select, text

from billing.models import LedgerEntry, Payment, PaymentStatus, User
from contracts.topology import build_topology
from jobs.models import Job
from messaging.broker import delete_topology
from sandbox.stack import StackConfig
from sandbox.story import PACKAGE_CREDITS, PRESET_PRICE, PROMPT_PRICE, WELCOME_CREDITS
from support.database import RUN_ID, DatabaseFactory, engine_at
from support.upgrade import (
    CURRENT,
    Players,
    Release,
    ReleaseMissing,
    Replacement,
    UpgradeStack,
    materialise,
    previous_release_commit,
)

USERS = 3
UPGRADE_ORDER = ("gpu_runner", "jobs", "billing", "bot_gateway", "backend_api")
"""docs/deployment.md's order: every service before those that send it requests, so a request's
new version is only sent once its reader is new: the runners (jobs sends them JobDispatched),
then jobs and billing (the gateway sends them JobRequested, TopUpRequested...), the gateway, and
the backend API last (it commands billing, jobs and the gateway)."""
ROUND_CREDITS = PACKAGE_CREDITS - PRESET_PRICE - PROMPT_PRICE
"""What a user's balance gains in a round: a preset, a prompt-only job and a top-up."""
DLQ_LINE = re.compile(r"^(\S+\.dlq)\s+(\d+)\s", re.M)


@dataclass
class Drill:
    stack: UpgradeStack
    previous: Release
    players: Players
    imported_from: dict[str, str]
    """Where a process in the previous release's environment imports each package from."""
    revisions: dict[str, tuple[str, str]] = field(default_factory=dict)
    """After each release's migrate: (the database's revision, that release's head)."""
    replayed: dict[str, int] = field(default_factory=dict)
    """How many dead letters each DLQ held after the upgrade, all replayed."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds each phase of the drill took (reported, never asserted)."""

    @asynccontextmanager
    async def phase(self, name: str) -> AsyncIterator[None]:
        began = time.monotonic()
        yield
        self.phases[name] = time.monotonic() - began


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    commit = previous_release_commit()
    try:
        return materialise(commit, tmp_path_factory.mktemp("previous-release"))
    except ReleaseMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def test_a_previous_release_missing_from_the_history_fails_the_drill(tmp_path: Path) -> None:
    with pytest.raises(ReleaseMissing, match="not in this clone's history"):
        materialise("0" * 40, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
async def drill(
    databases: DatabaseFactory,
    amqp_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    previous_release: Release,
) -> AsyncIterator[Drill]:
    namespace = f"test-{RUN_ID}-upgrade"
    config = StackConfig(
        database_url=await databases.create("upgrade"),
        amqp_url=amqp_url,
        namespace=namespace,
        work_dir=tmp_path_factory.mktemp("upgrade"),
        env={"TELEGRAM_MODE": "webhook",
             # the users tap as fast as a script does; flood control is not what is drilled
             "GATEWAY_FLOOD_MESSAGES": "1000"},
        service_env={"gpu_runner": {"GPU_PILLOW_FILTER_STEPS": "3",
                                    "GPU_PILLOW_FILTER_STEP_DELAY_S": "0.2",
                                    "GPU_QWEN_IMAGE_STEPS": "2",
                                    "GPU_QWEN_IMAGE_RESOLUTION": "128"},
                     # each billing that starts grants this week's bonus to whoever lacks it:
                     # a credit at a moment no user's script could foresee
                     "billing": {"BONUS_ENABLED": "false"}},
    )  # fmt: skip
    try:
        async with UpgradeStack(config, previous_release) as stack:
            drill = Drill(stack, previous_release, Players(stack, USERS), {})
            drill.imported_from = previous_release.imported_from()
            drill.revisions["previous"] = (await revision(stack), previous_release.head)
            await play_through_the_upgrade(drill)
            yield drill
    finally:
        await delete_topology(amqp_url, build_topology(namespace))


async def play_through_the_upgrade(drill: Drill) -> None:
    stack, players = drill.stack, drill.players
    players.start()
    async with drill.phase("users at work on the previous release"):
        await players.each_step()
    async with drill.phase("migrate (this release)"):
        await stack.imagebot("migrate", release=CURRENT)
        stack.operator = CURRENT
        drill.revisions["current"] = (await revision(stack), CURRENT.head)
    async with drill.phase("the previous release on the new schema"):
        await players.each_step()
    for service in UPGRADE_ORDER:
        async with drill.phase(f"replace {service}"):
            await stack.replace(service, CURRENT, beside=players.each_step)
    async with drill.phase("a whole round on this release"):
        await players.finish()
    async with drill.phase("dead letters replayed"):
        drill.replayed = await replay_dead_letters(stack)
    busy = sum(player.busy for player in players.players)
    print("rolling upgrade: " + ", ".join(f"{name} {s:.1f} s" for name, s in drill.phases.items()))
    print(f"rolling upgrade: {busy} busy answers asked again")


async def revision(stack: UpgradeStack) -> str:
    async with engine_at(stack.config.database_url) as engine, engine.connect() as connection:
        return str(
            (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        )


async def replay_dead_letters(stack: UpgradeStack) -> dict[str, int]:
    """Replay every DLQ that holds anything, once; how many each held."""
    listed = await stack.imagebot("dlq", "list")
    held = {dlq: int(count) for dlq, count in DLQ_LINE.findall(listed) if int(count)}
    for dlq in held:
        report = await stack.imagebot("dlq", "replay", dlq, "--wait", "5")
        assert f"replayed {held[dlq]} of {held[dlq]} " in report, report
        assert "died again within 5s: 0" in report, report
    print(f"rolling upgrade: dead letters replayed after it: {held or 'none'}")
    return held


def test_the_previous_release_ran_from_its_own_source(drill: Drill) -> None:
    source = drill.previous.root / "src"
    for package, path in drill.imported_from.items():
        assert Path(path).is_relative_to(source), f"{package} came from {path}, not {source}"
    for service in UPGRADE_ORDER:  # compiled when its old process imported it
        assert drill.previous.compiled(service), f"no process imported {source}/{service}/app.py"
    database, head = drill.revisions["previous"]
    assert database == head


def test_the_new_migrate_brought_the_database_to_this_release(drill: Drill) -> None:
    database, head = drill.revisions["current"]
    assert database == head


def test_every_service_was_replaced_in_order_and_stopped_gracefully(drill: Drill) -> None:
    replacements: list[Replacement] = drill.stack.replacements
    assert [r.service for r in replacements] == list(UPGRADE_ORDER)
    assert [r.old for r in replacements] == [f"{s}-previous" for s in UPGRADE_ORDER]
    for replacement in replacements:
        assert replacement.graceful, f"{replacement.old} exited with {replacement.old_exit}"
    for service, processes in drill.stack.processes.items():
        assert [p.name for p in processes] == [f"{service}-current"]
        assert processes[0].running, f"{service}-current died"


async def test_the_new_services_did_the_work_after_the_upgrade(drill: Drill) -> None:
    async with aiohttp.ClientSession() as http:
        for process in drill.stack.all_processes:
            async with http.get(f"{process.url}/metrics") as answer:
                body = await answer.text()
            metric = (
                "imagebot_gpu_busy_seconds_total"
                if process.service == "gpu_runner"
                else "imagebot_messages_consumed_total"
            )
            values = re.findall(rf"^{metric}(?:{{.*}})? (\S+)$", body, re.M)
            assert sum(map(float, values)) > 0, f"{process.name} did nothing"


def test_every_result_was_delivered_once_and_every_top_up_credited_once(drill: Drill) -> None:
    telegram = drill.stack.telegram
    for player in drill.players.players:
        chat = player.user.user.id
        photos = telegram.sent_to(chat, "sendPhoto")
        assert len(photos) == player.jobs
        assert all(photo.photo for photo in photos)
        credited = [c for c in telegram.sent_to(chat, "sendMessage") if "Платёж получен" in c.text]
        assert len(credited) == player.topups
        assert (player.jobs, player.topups) == (2 * player.rounds, player.rounds)
        assert player.balance == WELCOME_CREDITS + player.rounds * ROUND_CREDITS
    total = sum(player.topups for player in drill.players.players)
    assert drill.stack.yookassa.notifications_sent == total


async def test_no_job_is_lost_and_every_job_finished(drill: Drill) -> None:
    chats = {player.user.user.id: player for player in drill.players.players}
    async with engine_at(drill.stack.config.database_url) as engine, engine.connect() as db:
        rows = (
            await db.execute(
                select(Job.telegram_id, Job.stage, func.count())
                .where(Job.telegram_id.in_(chats))
                .group_by(Job.telegram_id, Job.stage)
            )
        ).all()
        payments = (
            await db.execute(
                select(User.telegram_id, Payment.status, func.count(LedgerEntry.id))
                .join(Payment, Payment.user_id == User.user_id)
                .outerjoin(LedgerEntry, LedgerEntry.payment_id == Payment.id)
                .where(User.telegram_id.in_(chats))
                .group_by(User.telegram_id, Payment.id, Payment.status)
            )
        ).all()
    assert {(chat, stage): n for chat, stage, n in rows} == {
        (chat, "completed"): player.jobs for chat, player in chats.items()
    }
    for chat, player in chats.items():
        paid = [
            (status, entries) for telegram_id, status, entries in payments if telegram_id == chat
        ]
        assert paid == [(PaymentStatus.succeeded, 1)] * player.topups


async def test_the_books_balance(drill: Drill) -> None:
    audit = await drill.stack.imagebot("billing", "audit")
    assert "0 drifting" in audit


async def test_no_message_is_left_after_the_replay(drill: Drill) -> None:
    topology = build_topology(drill.stack.config.namespace)
    listed = dict(DLQ_LINE.findall(await drill.stack.imagebot("dlq", "list")))
    assert listed == {spec.dlq: "0" for spec in topology.queues}
    connection = await aio_pika.connect(drill.stack.config.amqp_url)
    async with connection:
        channel = await connection.channel()

        async def waiting() -> dict[str, int]:
            counts = {}
            for spec in topology.queues:
                queue = await channel.declare_queue(spec.name, passive=True)
                counts[spec.name] = queue.declaration_result.message_count or 0
            return {name: count for name, count in counts.items() if count}

        left = await waiting()
        for _ in range(50):  # the last progress reports may still be on their way
            if not left:
                break
            await asyncio.sleep(0.2)
            left = await waiting()
        assert left == {}
