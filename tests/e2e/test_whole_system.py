"""The demo's story end to end, with two replicas of every service running at once.

Every service is its own process started by `imagebot run`, talking to the real PostgreSQL and
RabbitMQ; Telegram and YooKassa are the sandboxes. Four users play the story at the same time,
so each replica gets its share of the work; afterwards the books must balance and nothing may
sit in a dead-letter queue.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aio_pika
import aiohttp
import pytest

from contracts.topology import build_topology
from messaging.broker import delete_topology
from sandbox.stack import SandboxStack, StackConfig
from sandbox.story import (
    REFUND_CREDITS,
    WELCOME_CREDITS,
    BonusRound,
    StoryResult,
    new_user,
    play,
)
from sandbox.user import SandboxUser
from support.database import RUN_ID, DatabaseFactory

USERS = 4
FINAL_BALANCE = WELCOME_CREDITS - 20 - 30 + 100 - REFUND_CREDITS + 30
"""The Stars top-up's credits came and went: the operator refunded it whole."""


@pytest.fixture(scope="module")
async def stack(
    databases: DatabaseFactory, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SandboxStack]:
    namespace = f"test-{RUN_ID}-e2e"
    config = StackConfig(
        database_url=await databases.create("e2e"),
        amqp_url=amqp_url,
        namespace=namespace,
        work_dir=tmp_path_factory.mktemp("e2e"),
        replicas=2,
        service_env={"gpu_runner": {"GPU_PILLOW_FILTER_STEPS": "3",
                                    "GPU_PILLOW_FILTER_STEP_DELAY_S": "0.2"}},
    )  # fmt: skip
    try:
        async with SandboxStack(config) as running:
            yield running
    finally:
        await delete_topology(amqp_url, build_topology(namespace))


async def metric_total(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as answer:
        body = await answer.text()
    return sum(float(value) for value in re.findall(rf"^{name}(?:{{.*}})? (\S+)$", body, re.M))


@pytest.fixture(scope="module")
async def story(stack: SandboxStack) -> list[tuple[SandboxUser, StoryResult]]:
    """Four users play the whole story at once."""
    bonus = BonusRound(stack, players=USERS)
    users = [SandboxUser(stack.telegram, new_user()) for _ in range(USERS)]
    results = await asyncio.gather(*(play(stack, user, bonus=bonus) for user in users))
    return list(zip(users, results, strict=True))


async def test_the_story_with_two_replicas_of_everything(
    stack: SandboxStack, story: list[tuple[SandboxUser, StoryResult]]
) -> None:
    assert [result.balance for _user, result in story] == [FINAL_BALANCE] * USERS
    users = [user for user, _result in story]
    for user in users:  # every user got both pictures, as photos
        photos = stack.telegram.sent_to(user.user.id, "sendPhoto")
        assert len(photos) == 2
        assert all(photo.photo for photo in photos)
    # each user's payment.succeeded and the operator's refund.succeeded, each answered 200 once
    assert stack.yookassa.notifications_sent == 2 * USERS


@pytest.mark.usefixtures("story")
async def test_every_replica_took_part(stack: SandboxStack) -> None:
    for service, replicas in stack.processes.items():
        if service == "backend_api":  # it consumes only its commands' answers: see below
            continue
        metric = (
            "imagebot_gpu_busy_seconds_total"
            if service == "gpu_runner"
            else "imagebot_messages_consumed_total"
        )
        for process in replicas:
            assert process.running, f"{process.name} died"
            assert await metric_total(process.url, metric) > 0, f"{process.name} did nothing"


async def test_operators_find_every_player_through_each_backend_api_replica(
    stack: SandboxStack, story: list[tuple[SandboxUser, StoryResult]]
) -> None:
    """The operators' API reads billing's books by request/reply, on every replica."""
    headers = {"Authorization": f"Bearer {await stack.operator_token()}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for process in stack.processes["backend_api"]:
            assert process.running, f"{process.name} died"
            for user, _result in story:
                async with http.get(
                    f"{process.url}/api/v1/users", params={"telegram_id": user.user.id}
                ) as answer:
                    assert answer.status == 200, await answer.text()
                    (account,) = (await answer.json())["items"]
                assert account["balance"] == str(FINAL_BALANCE)  # exact: a decimal string
                async with http.get(
                    f"{process.url}/api/v1/jobs", params={"user_id": account["user_id"]}
                ) as answer:
                    assert answer.status == 200, await answer.text()
                    assert (await answer.json())["total"] >= 2


@pytest.mark.usefixtures("story")
async def test_the_books_balance_and_no_message_is_left(stack: SandboxStack) -> None:
    audit = await stack.imagebot("billing", "audit")
    assert "0 drifting" in audit
    topology = build_topology(stack.config.namespace)
    names = [name for spec in topology.queues for name in (spec.name, spec.dlq)]
    connection = await aio_pika.connect(stack.config.amqp_url)
    async with connection:
        channel = await connection.channel()

        async def waiting() -> dict[str, int]:
            counts = {}
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                counts[name] = queue.declaration_result.message_count or 0
            return {name: count for name, count in counts.items() if count}

        left = await waiting()
        for _ in range(50):  # the last progress reports may still be on their way
            if not left:
                break
            await asyncio.sleep(0.2)
            left = await waiting()
        assert left == {}
