"""Operations through the API against the real broker and services: dead letters listed, shown,
replayed and purged (audited, once per key), each workflow's queue depth and ETA from jobs, and
a workflow's queue paused (its paid jobs wait, their users are told) and resumed (they go on)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from contracts.envelope import new_envelope
from contracts.events import JobDispatchedV1
from contracts.topology import Topology
from gpu_runner.settings import RunnerSettings
from jobs.dispatcher import Dispatcher
from jobs.models import DELIVERY as JOBS
from jobs.models import Job
from jobs.settings import JobsSettings
from messaging.unit_of_work import UnitOfWork
from support.backend_harness import OPERATOR, SUPPORT, VIEWER, Running
from support.billing_harness import new_telegram_id
from support.messaging import eventually
from support.runner import serving_runner

pytestmark = pytest.mark.integration

WORKFLOW = "pillow_filter"


async def call(
    running: Running,
    method: str,
    path: str,
    *,
    login: str = OPERATOR,
    key: uuid.UUID | None = None,
    **body: Any,
) -> tuple[int, Any]:
    headers = {"Idempotency-Key": str(key)} if key else {}
    async with (
        running.client(login=login) as client,
        client.request(
            method, path, json=body if method == "POST" else None, headers=headers
        ) as response,
    ):
        return response.status, await response.json()


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def dead_letter(
    channel: aio_pika.abc.AbstractChannel, queue: str, message: aio_pika.Message
) -> None:
    """Publish `message` to `queue` (nobody consumes it) and reject it: its DLQ has it."""
    await channel.default_exchange.publish(message, routing_key=queue)
    taken = await (await channel.get_queue(queue, ensure=False)).get(no_ack=False, timeout=5)
    assert taken is not None
    await taken.reject(requeue=False)


async def count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    """Messages in `queue`, read and put back (a quorum queue's passive count lags)."""
    taken = []
    source = await channel.get_queue(queue, ensure=False)
    while (message := await source.get(no_ack=False, fail=False)) is not None:
        taken.append(message)
    for message in taken:
        await message.nack(requeue=True)
    return len(taken)


async def test_a_dead_letter_is_listed_shown_replayed_once_and_another_purged(
    running: Running, topology: Topology, channel: aio_pika.abc.AbstractChannel
) -> None:
    gpu = topology.gpu_queues[WORKFLOW]
    work = JobDispatchedV1(job_id=7, attempt=1, workflow_type=WORKFLOW, prompt="sepia")
    envelope = new_envelope(work, source="test")
    await dead_letter(
        channel,
        gpu.name,
        aio_pika.Message(
            envelope.model_dump_json().encode(),
            message_id=str(envelope.id),
            type=envelope.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
    )
    await dead_letter(channel, gpu.name, aio_pika.Message(b"{not json", message_id="garbage-7"))

    status, listing = await call(running, "GET", "/api/v1/dead-letters", login=VIEWER)
    assert status == 200, listing
    counts = {queue["dlq"]: queue for queue in listing["items"]}
    assert counts[gpu.dlq]["count"] == 2
    assert counts[gpu.dlq]["reasons"] == {"rejected": 2}
    assert counts[topology.service_queues["jobs"].dlq]["count"] == 0

    status, shown = await call(running, "GET", f"/api/v1/dead-letters/gpu.{WORKFLOW}")
    assert status == 200
    assert shown["total"] == 2
    letter, garbage = shown["items"]
    assert (letter["key"], letter["queue"], letter["reason"]) == (
        str(envelope.id),
        gpu.name,
        "rejected",
    )
    assert letter["envelope"]["data"]["prompt"] == "sepia"
    assert (garbage["key"], garbage["envelope"], garbage["body"]) == (
        "garbage-7",
        None,
        "{not json",
    )
    status, _ = await call(running, "GET", "/api/v1/dead-letters/no.such.queue")
    assert status == 404

    replay = {"ids": [str(envelope.id)], "reason": "the runner is fixed"}
    key = uuid.uuid4()
    status, _ = await call(running, "POST", f"/api/v1/dead-letters/{gpu.dlq}/replay", **replay)
    assert status == 422  # no idempotency key
    status, _ = await call(
        running,
        "POST",
        f"/api/v1/dead-letters/{gpu.dlq}/replay",
        login=SUPPORT,
        key=key,
        **replay,
    )
    assert status == 403
    status, _ = await call(
        running, "POST", f"/api/v1/dead-letters/{gpu.dlq}/replay", key=key, ids=replay["ids"]
    )
    assert status == 422  # no reason
    for _ in range(2):  # the same key again: the same answer, nothing sent twice
        status, done = await call(
            running, "POST", f"/api/v1/dead-letters/{gpu.dlq}/replay", key=key, **replay
        )
        assert status == 200, done
        assert (done["status"], done["action"], done["operator"]) == (
            "applied",
            "dlq.replay",
            OPERATOR,
        )
        assert done["outcome"]["replayed"] == [str(envelope.id)]
        assert done["outcome"]["left"] == 1
    assert await count(channel, gpu.name) == 1  # back in the work queue, once
    back = await (await channel.get_queue(gpu.name, ensure=False)).get(no_ack=True, timeout=5)
    assert back is not None
    assert json.loads(back.body)["id"] == str(envelope.id)

    status, refused = await call(
        running,
        "POST",
        f"/api/v1/dead-letters/gpu.{WORKFLOW}/replay",
        key=uuid.uuid4(),
        reason="try the rest",
    )
    assert status == 200
    assert refused["outcome"]["replayed"] == []
    assert refused["outcome"]["refused"][0].startswith("garbage-7: not a valid event envelope")

    status, purged = await call(
        running,
        "POST",
        f"/api/v1/dead-letters/{gpu.dlq}/purge",
        key=uuid.uuid4(),
        ids=["garbage-7"],
        reason="not an event",
    )
    assert status == 200
    assert (purged["status"], purged["outcome"]) == ("applied", {"purged": 1})
    assert await count(channel, gpu.dlq) == 0

    status, audit = await call(running, "GET", "/api/v1/audit?target=" + gpu.dlq)
    assert status == 200
    assert [(row["action"], row["reason"]) for row in audit["items"]] == [
        ("dlq.purge", "not an event"),
        ("dlq.replay", "try the rest"),
        ("dlq.replay", "the runner is fixed"),
    ]


async def waiting_job(engine: AsyncEngine) -> int:
    """A paid job of the workflow, of a user of its own, waiting in jobs for dispatch."""
    telegram_id = new_telegram_id()
    async with UnitOfWork(engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, telegram_id, None, 60)
    async with engine.begin() as connection:
        return int(
            (
                await connection.execute(
                    insert(Job)
                    .values(
                        user_id=account.user_id,
                        telegram_id=telegram_id,
                        chat_id=telegram_id,
                        prompt="sepia",
                        price=10,
                        request_id=uuid.uuid4(),
                        workflow_type=WORKFLOW,
                        stage="waiting",
                        status="queued",
                    )
                    .returning(Job.id)
                )
            ).scalar_one()
        )


async def stage_of(engine: AsyncEngine, job_id: int) -> str:
    async with engine.connect() as connection:
        return str((await connection.execute(select(Job.stage).where(Job.id == job_id))).scalar())


async def dispatch_pass(engine: AsyncEngine) -> None:
    """One pass of jobs' dispatcher, as its loop runs it."""
    await Dispatcher(JobsSettings()).dispatch_ready(lambda: UnitOfWork(engine, JOBS, source="jobs"))


async def test_a_paused_workflow_holds_its_jobs_tells_their_users_and_resumes_in_order(
    running: Running,
    backend_engine: AsyncEngine,
    topology: Topology,
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    told = await channel.declare_queue(exclusive=True)
    await told.bind(topology.events_exchange, routing_key="job.held")
    pause, resume = f"/api/v1/workflows/{WORKFLOW}/pause", f"/api/v1/workflows/{WORKFLOW}/resume"
    status, _ = await call(running, "POST", resume, key=uuid.uuid4(), reason="a clean start")
    assert status == 200  # another test (the fuzzer) may have paused it

    first = await waiting_job(backend_engine)
    status, _ = await call(running, "POST", pause, login=SUPPORT, key=uuid.uuid4(), reason="x")
    assert status == 403
    key = uuid.uuid4()
    status, paused = await call(running, "POST", pause, key=key, reason="GPU driver update")
    assert status == 200, paused
    assert (paused["status"], paused["action"], paused["target"]) == (
        "applied",
        "workflow.pause",
        WORKFLOW,
    )
    assert paused["outcome"]["already"] is False
    assert paused["outcome"]["waiting"] >= 1
    status, again = await call(running, "POST", pause, key=key, reason="GPU driver update")
    assert (status, again["request_id"]) == (200, paused["request_id"])

    status, queues = await call(running, "GET", "/api/v1/workflows", login=VIEWER)
    assert status == 200
    view = next(one for one in queues["workflows"] if one["workflow_type"] == WORKFLOW)
    assert view["paused"] is True
    assert view["waiting"] >= 1
    assert view["eta_seconds"] >= 0
    assert {one["workflow_type"] for one in queues["workflows"]} >= {WORKFLOW, "qwen_image"}

    second = await waiting_job(backend_engine)
    await dispatch_pass(backend_engine)
    assert (await stage_of(backend_engine, first), await stage_of(backend_engine, second)) == (
        "waiting",
        "waiting",
    )  # not dispatched, not lost, not failed
    held = await told.get(timeout=10)
    assert json.loads(held.body)["data"]["job_id"] in (first, second)
    assert json.loads(held.body)["data"]["reason"] == "workflow_paused"

    status, resumed = await call(running, "POST", resume, key=uuid.uuid4(), reason="updated")
    assert status == 200
    assert (resumed["status"], resumed["outcome"]["already"]) == ("applied", False)
    await dispatch_pass(backend_engine)
    assert (await stage_of(backend_engine, first), await stage_of(backend_engine, second)) == (
        "dispatched",
        "dispatched",
    )
    status, queues = await call(running, "GET", "/api/v1/workflows")
    view = next(one for one in queues["workflows"] if one["workflow_type"] == WORKFLOW)
    assert view["paused"] is False


async def runner_row(running: Running, runner_id: str) -> dict[str, Any] | None:
    status, page = await call(running, "GET", "/api/v1/runners", login=VIEWER)
    assert status == 200, page
    return next((row for row in page["items"] if row["runner_id"] == runner_id), None)


async def test_a_runner_is_shown_from_its_heartbeats_and_gone_once_they_stop(
    running: Running, topology: Topology, amqp_url: str, tmp_path: Path
) -> None:
    runner_id = f"runner-{uuid.uuid4().hex[:6]}"
    settings = RunnerSettings(
        workflows=WORKFLOW, runner_id=runner_id, heartbeat_interval_s=0.3, device="auto"
    )
    async with serving_runner(amqp_url, topology, tmp_path, settings):

        async def up() -> bool:
            row = await runner_row(running, runner_id)
            return row is not None and row["state"] == "up"

        await eventually(up, timeout_s=20)
        row = await runner_row(running, runner_id)
        assert row is not None
        assert (row["workflows"], row["device"], row["current_job"]) == ([WORKFLOW], "cpu", None)
        assert row["memory_total_bytes"] is None  # no GPU in this process
        first_beat = row["last_beat_at"]

        async def beating() -> bool:
            later = await runner_row(running, runner_id)
            return later is not None and later["last_beat_at"] > first_beat

        await eventually(beating, timeout_s=10)

    async def gone() -> bool:  # its last beat said it stops; then no beat comes
        row = await runner_row(running, runner_id)
        return row is not None and row["state"] == "gone"

    await eventually(gone, timeout_s=10)
