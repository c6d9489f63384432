"""Request/reply on the real broker: answers, refusals, bad requests, silence."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aio_pika
import pytest
from faststream.rabbit import RabbitBroker
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import NotSupportedError

from contracts.rpc import Account, EnsureAccount, PresetCatalog
from contracts.topology import Topology
from messaging.broker import create_broker, declare_topology
from messaging.rpc import RpcClient, RpcRefusedError, serve
from messaging.settings import BrokerSettings

STALE_PLAN = AsyncAdapt_asyncpg_dbapi.InvalidCachedStatementError
STALE_ONCE: list[int] = []


async def open_account(request: EnsureAccount) -> Account:
    if request.telegram_id == 13:
        raise RpcRefusedError("banned", "unlucky number")
    if request.telegram_id == 666:
        raise RuntimeError("the handler broke")
    if request.telegram_id == 777 and not STALE_ONCE:
        STALE_ONCE.append(request.telegram_id)  # a migration altered a table under this process
        raise NotSupportedError("SELECT ...", {}, STALE_PLAN("cached statement plan is invalid"))
    return Account(
        user_id=7,
        telegram_id=request.telegram_id,
        username=request.username,
        balance=60,
        created=True,
    )


@pytest.fixture
async def server(amqp_url: str, topology: Topology) -> AsyncIterator[RabbitBroker]:
    broker = create_broker(BrokerSettings(url=amqp_url), graceful_timeout_s=5)  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    serve(broker, topology, EnsureAccount, open_account)
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
async def client(amqp_url: str, topology: Topology) -> AsyncIterator[RpcClient]:
    client = RpcClient(amqp_url, topology, timeout_s=2)
    yield client
    await client.close()


async def test_a_call_returns_the_servers_result(server: RabbitBroker, client: RpcClient) -> None:
    account = await client.call(EnsureAccount(telegram_id=2**40, username="ann"), Account)
    assert account == Account(
        user_id=7, telegram_id=2**40, username="ann", balance=60, created=True
    )


async def test_calls_run_at_once_not_one_after_another(
    amqp_url: str, topology: Topology, client: RpcClient
) -> None:
    """50 calls to a server that takes 50 at a time are all in its hands at once: each waits
    until the 50th has arrived, which calls served one after another never would (no clock)."""
    arrived, all_in = 0, asyncio.Event()

    async def together(request: EnsureAccount) -> Account:
        nonlocal arrived
        arrived += 1
        if arrived == 50:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), timeout=4)
        return await open_account(request)

    broker = create_broker(BrokerSettings(url=amqp_url), graceful_timeout_s=5)  # type: ignore[arg-type]
    await declare_topology(amqp_url, topology)
    serve(broker, topology, EnsureAccount, together, prefetch=50)
    await broker.start()
    try:
        accounts = await asyncio.gather(
            *(client.call(EnsureAccount(telegram_id=2**40 + n), Account) for n in range(50))
        )
    finally:
        await broker.stop()
    assert [account.telegram_id for account in accounts] == [2**40 + n for n in range(50)]
    assert all_in.is_set()


async def test_a_lost_connection_is_opened_anew(server: RabbitBroker, client: RpcClient) -> None:
    """After a broker restart the client's channel is closed for good: the next call must open
    a new one, not fail on the old one for ever (it did, under chaos)."""
    await client.call(EnsureAccount(telegram_id=2**40), Account)
    connection = client._connection
    assert connection is not None
    await connection.close()  # what a broker restart leaves behind
    account = await client.call(EnsureAccount(telegram_id=2**40 + 1), Account)
    assert account.telegram_id == 2**40 + 1
    assert client._connection is not connection


async def test_a_refusal_reaches_the_caller_with_its_code(
    server: RabbitBroker, client: RpcClient
) -> None:
    with pytest.raises(RpcRefusedError) as refused:
        await client.call(EnsureAccount(telegram_id=13), Account)
    assert (refused.value.code, refused.value.detail) == ("banned", "unlucky number")


async def test_a_broken_handler_answers_internal_error_instead_of_silence(
    server: RabbitBroker, client: RpcClient
) -> None:
    with pytest.raises(RpcRefusedError) as refused:
        await client.call(EnsureAccount(telegram_id=666), Account)
    assert refused.value.code == "internal_error"
    # and the server goes on answering
    assert (await client.call(EnsureAccount(telegram_id=1), Account)).telegram_id == 1


async def test_a_transient_failure_is_tried_once_more_before_the_caller_is_answered(
    server: RabbitBroker, client: RpcClient
) -> None:
    """A statement cached before a migration altered its table fails once per connection (the
    dialect then drops its caches): the caller gets the answer, not an error."""
    assert (await client.call(EnsureAccount(telegram_id=777), Account)).telegram_id == 777
    assert STALE_ONCE == [777]


async def test_a_malformed_request_is_answered_invalid_request(
    server: RabbitBroker, amqp_url: str, topology: Topology
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"telegram_id": -5}', reply_to=replies.name),
            routing_key=topology.rpc_queue(EnsureAccount.method),
        )
        reply = await _first(replies)
    assert b'"code":"invalid_request"' in reply.body


async def _first(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    async with queue.iterator(timeout=5) as messages:
        async for message in messages:
            return message
    raise AssertionError("no reply")


async def test_a_call_nobody_answers_times_out(
    client: RpcClient, amqp_url: str, topology: Topology
) -> None:
    await declare_topology(amqp_url, topology)  # the queue exists, no server consumes it
    with pytest.raises(TimeoutError):
        await client.call(EnsureAccount(telegram_id=1), Account)


async def test_asking_for_the_wrong_result_type_is_a_programming_error(client: RpcClient) -> None:
    with pytest.raises(TypeError):
        await client.call(EnsureAccount(telegram_id=1), PresetCatalog)


async def test_answering_logs_no_error_on_the_server(
    server: RabbitBroker, client: RpcClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A mandatory reply to direct reply-to comes back as a return, which our channel raises."""
    with caplog.at_level(logging.WARNING):
        for telegram_id in range(1, 4):
            await client.call(EnsureAccount(telegram_id=telegram_id), Account)
        await asyncio.sleep(0.2)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
