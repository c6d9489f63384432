"""Debits and refunds through the running billing service, on the real broker and database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aio_pika
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.app import Billing
from billing.models import DELIVERY
from contracts.envelope import RawEnvelope, new_envelope
from contracts.events import JobCanceled, JobCreated, JobFailed
from contracts.rpc import Account, EnsureAccount, ListTopUpPackages, TopUpPackages
from contracts.topology import Topology
from messaging.publisher import EventPublisher
from messaging.rpc import RpcClient
from messaging.unit_of_work import AlreadyHandled, Committed, UnitOfWork
from support.billing_harness import (
    balance_of,
    eventually,
    execute,
    fund,
    handled,
    ledger_sum,
    new_job,
    new_telegram_id,
    open_account,
    outbox,
    scalar,
    send,
)

Engine = AsyncEngine


async def handled_in_all(engine: Engine, count: int) -> None:
    """Until billing has marked `count` messages handled in all."""

    async def enough() -> bool:
        return await handled(engine) >= count

    await eventually(enough)


async def _debit(
    engine: Engine, job: JobCreated, message: RawEnvelope
) -> tuple[list[Committed], list[str]]:
    """JobCreated handled as the consumer handles it (one unit of work for the message, then
    its commit): the events handed to the relay and every statement sent to the database."""
    committed: list[Committed] = []
    statements: list[str] = []

    def sent(_c: object, _cur: object, statement: str, *_: object) -> None:
        statements.append(statement)

    sqlalchemy.event.listen(engine.sync_engine, "before_cursor_execute", sent)
    try:
        async with UnitOfWork(
            engine, DELIVERY, source="billing", cause=message, on_commit=committed.extend
        ) as uow:
            await services.debit_job(job, uow)
            await uow.commit()
    finally:
        sqlalchemy.event.remove(engine.sync_engine, "before_cursor_execute", sent)
    return committed, statements


async def test_a_debit_is_one_statement_and_a_refusal_decides_on_what_it_reads(
    billing_engine: Engine,
) -> None:
    """The common debit is one autocommitted statement: the balance, its ledger entry, the
    message's mark and BalanceDebited with the balance it left. One that cannot apply reads
    the facts and decides: a refusal (with its zero entry), or a duplicate that changes nothing."""
    user_id, telegram_id = await open_account(billing_engine, balance=15)
    job = new_job(user_id, telegram_id, price=10)
    message = new_envelope(job, source="test")

    committed, statements = await _debit(billing_engine, job, message)
    assert len(statements) == 1, statements
    [(routing_key, debited), (_, debited_v1)] = committed  # v2 and its v1 copy beside it
    assert (routing_key, debited.data["balance"], debited.causation_id) == (
        "balance.debited",
        "5",
        message.id,
    )
    assert (debited.version, debited_v1.version, debited_v1.data["balance"]) == (2, 1, 5)
    [stored] = await outbox(billing_engine, "balance.debited", job_id=job.job_id)
    assert stored == {"job_id": job.job_id, "user_id": user_id, "amount": 10, "balance": 5}
    assert await handled(billing_engine, message.id) == 1
    assert await balance_of(billing_engine, user_id) == 5

    short = new_job(user_id, telegram_id, price=12)
    committed, statements = await _debit(billing_engine, short, new_envelope(short, source="t"))
    assert len(statements) == 3, statements  # the debit that missed, the facts, the refusal
    [(routing_key, rejected), (_, rejected_v1)] = committed
    assert routing_key == "balance.debit_rejected"
    assert (rejected.data["balance"], rejected.data["shortfall"]) == ("5", "7")
    assert (rejected_v1.data["balance"], rejected_v1.data["shortfall"]) == (5, 7)
    assert await outbox(billing_engine, "balance.debit_rejected", job_id=short.job_id) == [
        {**rejected.data, "balance": 5, "shortfall": 7}
    ]
    entry = (
        "SELECT trim_scale(amount) || ' ' || reason FROM billing_ledger WHERE idempotency_key = :k"
    )
    assert await scalar(billing_engine, entry, k=f"debit:job:{short.job_id}") == (
        "0 refused: insufficient_funds"
    )

    with pytest.raises(AlreadyHandled):  # the same message again
        await _debit(billing_engine, job, message)
    again = new_envelope(job, source="test")  # the same fact under a new id: marked, no money
    committed, _ = await _debit(billing_engine, job, again)
    assert committed == []
    assert await handled(billing_engine, again.id) == 1
    assert await balance_of(billing_engine, user_id) == 5
    assert await ledger_sum(billing_engine, user_id) == 5


async def test_1000_concurrent_debits_on_an_account_funded_for_exactly_seven(
    billing: Billing, sender: EventPublisher, billing_engine: Engine
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=7 * 13)
    inbox_before = await handled(billing_engine)
    jobs = [new_job(user_id, telegram_id, price=13) for _ in range(1000)]
    await asyncio.gather(*(send(sender, job) for job in jobs))
    await handled_in_all(billing_engine, inbox_before + 1000)

    debited = await outbox(billing_engine, "balance.debited", user_id=user_id)
    rejected = await outbox(billing_engine, "balance.debit_rejected", user_id=user_id)
    assert len(debited) == 7
    assert len(rejected) == 993
    assert {r["reason"] for r in rejected} == {"insufficient_funds"}
    assert all(r["shortfall"] == 13 - r["balance"] and r["balance"] >= 0 for r in rejected)
    assert sorted(d["balance"] for d in debited) == [0, 13, 26, 39, 52, 65, 78]
    assert await balance_of(billing_engine, user_id) == 0
    assert await ledger_sum(billing_engine, user_id) == 0
    # Never negative at any moment: every intermediate balance the ledger saw, and the CHECK.
    lowest = await scalar(
        billing_engine,
        "SELECT min(balance_after) FROM billing_ledger WHERE user_id = :u",
        u=user_id,
    )
    assert lowest == 0
    assert (
        await scalar(
            billing_engine,
            "SELECT count(*) FROM pg_constraint WHERE conname = 'ck_users_balance_non_negative'",
        )
        == 1
    )


async def test_every_event_delivered_twice_moves_money_once(
    billing: Billing, sender: EventPublisher, billing_engine: Engine
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=100)
    paid, failed, canceled = (new_job(user_id, telegram_id, price=10) for _ in range(3))
    inbox_before = await handled(billing_engine)
    events = [
        paid,
        failed,
        canceled,
        JobFailed(job_id=failed.job_id, user_id=user_id, chat_id=1, reason="gpu_error"),
        JobCanceled(job_id=canceled.job_id, user_id=user_id, chat_id=1, was_running=True),
    ]
    envelopes = [new_envelope(event, source="test") for event in events]
    for n, (envelope, event) in enumerate(zip(envelopes, events, strict=True)):
        if n == 3:  # the debits first: a close that overtakes its debit is another test
            await handled_in_all(billing_engine, inbox_before + 6)
        # The same message twice (a redelivery), and the same fact again under a new event id
        # (a publisher that re-sent it): neither may move money a second time.
        await sender.publish_envelope(envelope, event.routing_key())
        await sender.publish_envelope(envelope, event.routing_key())
        await send(sender, event)
    await handled_in_all(billing_engine, inbox_before + 10)
    await asyncio.sleep(0.3)  # let any wrongly accepted duplicate land before counting

    assert len(await outbox(billing_engine, "balance.debited", user_id=user_id)) == 3
    refunds = await outbox(billing_engine, "balance.refunded", user_id=user_id)
    assert sorted((r["job_id"], r["amount"]) for r in refunds) == sorted(
        [(failed.job_id, 10), (canceled.job_id, 10)]
    )
    assert await balance_of(billing_engine, user_id) == 90
    assert await ledger_sum(billing_engine, user_id) == 90
    refund_rows = await scalar(
        billing_engine,
        "SELECT count(*) FROM payments WHERE user_id = :u AND payment_type = 'refund' "
        "AND status = 'succeeded' AND amount = 1000",
        u=user_id,
    )
    assert refund_rows == 2
    database_url = billing.runtime.engine.url.render_as_string(hide_password=False)
    assert await _audit(database_url) == (0, "0 drifting")


async def imagebot(database_url: str, *args: str) -> tuple[int, str, str]:
    """Run the `imagebot` command against `database_url`: (exit code, stdout, stderr)."""
    executable = Path(sys.executable).with_name("imagebot")
    process = await asyncio.create_subprocess_exec(
        str(executable),
        *args,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _audit(database_url: str) -> tuple[int, str]:
    code, out, _ = await imagebot(database_url, "billing", "audit")
    return code, out.strip().split(": ")[-1]


async def test_audit_fails_on_drift_and_adjust_corrects_through_the_ledger(
    billing_engine: Engine, billing_database_url: str
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    drift = "UPDATE users SET balance = balance + :by WHERE user_id = :u"
    await _execute(billing_engine, drift, user_id, 5)  # behind the ledger's back
    code, out, err = await imagebot(billing_database_url, "billing", "audit")
    assert code == 1
    assert f"DRIFT user {user_id} (telegram {telegram_id}): balance 65 != ledger 60" in err
    await _execute(billing_engine, drift, user_id, -5)
    assert await _audit(billing_database_url) == (0, "0 drifting")

    args = ("billing", "adjust", "--telegram-id", str(telegram_id), "--credits", "5")
    code, out, err = await imagebot(billing_database_url, *args, "--reason", "goodwill")
    assert code == 0, err
    assert "balance 65" in out
    assert await balance_of(billing_engine, user_id) == 65
    assert await ledger_sum(billing_engine, user_id) == 65
    code, out, err = await imagebot(billing_database_url, *args[:-1], "-100", "--reason", "oops")
    assert code == 1
    assert "below zero" in err
    assert await balance_of(billing_engine, user_id) == 65
    assert await _audit(billing_database_url) == (0, "0 drifting")


async def _execute(engine: Engine, sql: str, user_id: int, by: int) -> None:
    await execute(engine, sql, u=user_id, by=by)


async def test_refunds_only_what_was_debited(
    billing: Billing, sender: EventPublisher, billing_engine: Engine
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=5)
    never_paid = new_job(user_id, telegram_id, price=50)  # rejected: insufficient funds
    never_seen = new_job(user_id, telegram_id, price=1)  # JobFailed without a JobCreated
    free = new_job(user_id, telegram_id, price=0)
    inbox_before = await handled(billing_engine)
    await send(sender, never_paid)
    await send(sender, free)
    await handled_in_all(billing_engine, inbox_before + 2)  # a close overtaking them: another test
    for event in (
        JobFailed(job_id=never_paid.job_id, user_id=user_id, chat_id=1, reason="x"),
        JobFailed(job_id=never_seen.job_id, user_id=user_id, chat_id=1, reason="x"),
        JobCanceled(job_id=free.job_id, user_id=user_id, chat_id=1, was_running=False),
    ):
        await send(sender, event)
    await handled_in_all(billing_engine, inbox_before + 5)
    rejected = await outbox(billing_engine, "balance.debit_rejected", job_id=never_paid.job_id)
    assert rejected == [
        {
            "job_id": never_paid.job_id,
            "user_id": user_id,
            "reason": "insufficient_funds",
            "price": 50,
            "balance": 5,
            "shortfall": 45,
        }
    ]
    free_debit = await outbox(billing_engine, "balance.debited", job_id=free.job_id)
    assert [(d["amount"], d["balance"]) for d in free_debit] == [(0, 5)]
    assert await outbox(billing_engine, "balance.refunded", user_id=user_id) == []
    assert await balance_of(billing_engine, user_id) == 5


async def test_bad_input_gets_a_reason_and_moves_no_money(
    billing: Billing,
    sender: EventPublisher,
    billing_engine: Engine,
    topology: Topology,
    amqp_url: str,
) -> None:
    user_id, telegram_id = await open_account(billing_engine, balance=60)
    unknown = new_job(2**31 - 7, telegram_id, price=10)
    await send(sender, unknown)
    negative = new_envelope(new_job(user_id, telegram_id, price=10), source="test")
    poisoned = negative.model_dump(mode="json")
    poisoned["data"]["price"] = -10
    await sender._broker.publish(
        __import__("json").dumps(poisoned).encode(),
        exchange=topology.events_exchange,
        routing_key="job.created",
        persist=True,
        message_id=str(negative.id),
    )

    async def rejected() -> bool:
        return bool(await outbox(billing_engine, "balance.debit_rejected", job_id=unknown.job_id))

    await eventually(rejected)
    [reply] = await outbox(billing_engine, "balance.debit_rejected", job_id=unknown.job_id)
    assert (reply["reason"], reply["balance"], reply["shortfall"]) == ("unknown_account", 0, 10)
    dead = await _take_one(amqp_url, topology.service_queues["billing"].dlq)
    assert dead.message_id == str(negative.id)
    assert await balance_of(billing_engine, user_id) == 60


async def _take_one(amqp_url: str, queue: str) -> aio_pika.abc.AbstractIncomingMessage:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        for _ in range(200):
            message = await source.get(no_ack=True, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing dead-lettered to {queue}")


async def test_accounts_open_once_with_welcome_credits_over_request_reply(
    billing: Billing, amqp_url: str, topology: Topology, billing_engine: Engine
) -> None:
    client = RpcClient(amqp_url, topology, timeout_s=5)
    telegram_id = new_telegram_id()
    first = await client.call(EnsureAccount(telegram_id=telegram_id, username="anna"), Account)
    again = await client.call(EnsureAccount(telegram_id=telegram_id, username="anna_k"), Account)
    assert (first.created, first.balance, first.telegram_id) == (True, 60, telegram_id)
    assert (again.created, again.balance, again.user_id) == (False, 60, first.user_id)
    assert (
        await scalar(
            billing_engine, "SELECT username FROM users WHERE user_id = :u", u=first.user_id
        )
        == "anna_k"
    )
    keys = await scalar(
        billing_engine,
        "SELECT string_agg(idempotency_key, ',') FROM billing_ledger WHERE user_id = :u",
        u=first.user_id,
    )
    assert keys == f"welcome:{first.user_id}"
    packages = await client.call(ListTopUpPackages(), TopUpPackages)
    assert [p.package_id for p in packages.packages] == ["small", "medium", "large"]


async def test_a_job_closed_before_or_while_its_debit_arrives_is_never_charged(
    billing: Billing, sender: EventPublisher, billing_engine: Engine
) -> None:
    """JobCanceled may overtake JobCreated (they travel separately): no money may stick."""
    user_id, telegram_id = await open_account(billing_engine, balance=100)
    overtaken = new_job(user_id, telegram_id, price=30)
    racing = [new_job(user_id, telegram_id, price=1) for _ in range(40)]
    inbox_before = await handled(billing_engine)

    await send(
        sender, JobCanceled(job_id=overtaken.job_id, user_id=user_id, chat_id=1, was_running=False)
    )
    await handled_in_all(billing_engine, inbox_before + 1)
    await send(sender, overtaken)
    await asyncio.gather(
        *(
            send(sender, event)
            for job in racing
            for event in (
                job,
                JobCanceled(job_id=job.job_id, user_id=user_id, chat_id=1, was_running=False),
            )
        )
    )
    await handled_in_all(billing_engine, inbox_before + 2 + 2 * len(racing))

    async def settled() -> bool:
        debited = {
            job.job_id
            for job in racing
            if await outbox(billing_engine, "balance.debited", job_id=job.job_id)
        }
        refunded = {
            job.job_id
            for job in racing
            if await outbox(billing_engine, "balance.refunded", job_id=job.job_id)
        }
        # whatever was taken came back (races lost on the job's debit key are retried)
        return debited == refunded and await balance_of(billing_engine, user_id) == 100

    await eventually(settled)
    assert await outbox(billing_engine, "balance.debited", job_id=overtaken.job_id) == []
    assert await ledger_sum(billing_engine, user_id) == 100


async def test_a_refused_debit_redelivered_after_a_top_up_stays_refused(
    billing: Billing, sender: EventPublisher, billing_engine: Engine
) -> None:
    """A refusal is final: neither a redelivery nor a replay after a top-up charges the job."""
    user_id, telegram_id = await open_account(billing_engine, balance=5)
    job = new_job(user_id, telegram_id, price=10)
    envelope = new_envelope(job, source="test")
    inbox_before = await handled(billing_engine)
    await sender.publish_envelope(envelope, job.routing_key())
    await handled_in_all(billing_engine, inbox_before + 1)
    await fund(billing_engine, user_id, 50)
    await sender.publish_envelope(envelope, job.routing_key())  # the same message again
    await send(sender, job)  # and the same fact under a new id, as after the inbox forgot it
    paid = new_job(user_id, telegram_id, price=10)  # and a fresh job, which now goes through
    await send(sender, paid)
    await eventually(
        lambda: _debited(billing_engine, paid.job_id),
    )
    await asyncio.sleep(0.3)

    assert await outbox(billing_engine, "balance.debited", job_id=job.job_id) == []
    assert len(await outbox(billing_engine, "balance.debit_rejected", job_id=job.job_id)) == 1
    assert await balance_of(billing_engine, user_id) == 45
    assert await ledger_sum(billing_engine, user_id) == 45


async def _debited(engine: Engine, job_id: int) -> bool:
    return bool(await outbox(engine, "balance.debited", job_id=job_id))
