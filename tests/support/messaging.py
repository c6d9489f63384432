"""Helpers for tests on the real broker and database: drain queues, wait, query."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.topology import Topology
from messaging.publisher import EventPublisher


def publisher_for(broker: RabbitBroker, topology: Topology) -> EventPublisher:
    return EventPublisher(broker, topology.events_exchange, source="test", timeout_s=10)


async def drain(amqp_url: str, queue: str, *, idle_s: float = 1.0) -> list[AbstractIncomingMessage]:
    """Take every message from `queue` until it stays empty for `idle_s`."""
    taken: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        idle_since = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - idle_since < idle_s:
            message = await source.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                taken.append(message)
                idle_since = asyncio.get_running_loop().time()
    return taken


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def scalar(sessions: async_sessionmaker[AsyncSession], sql: str) -> Any:
    async with sessions() as session:
        return (await session.execute(text(sql))).scalar_one()


async def count(sessions: async_sessionmaker[AsyncSession], sql: str) -> int:
    return int(await scalar(sessions, sql))
