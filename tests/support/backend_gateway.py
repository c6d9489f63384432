"""The bot's side behind the backend API in its tests: the gateway (moderation off: nothing
here uploads) with the fake Telegram Bot API it polls and sends to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bot_gateway.app import Gateway
from bot_gateway.app import build as build_gateway
from contracts.topology import Topology
from moderation import ModerationSettings
from sandbox.telegram import TelegramSandbox
from support.gateway_harness import gateway_settings


@dataclass
class BotSide:
    gateway: Gateway
    telegram: TelegramSandbox


@asynccontextmanager
async def bot_side(
    database_url: str, amqp_url: str, topology: Topology, root: Path
) -> AsyncIterator[BotSide]:
    """The gateway, started, on the API's database and broker namespace."""
    telegram = TelegramSandbox()
    await telegram.start()
    try:
        gateway = build_gateway(
            gateway_settings(
                database_url,
                amqp_url,
                topology,
                telegram,
                root,
                moderation=ModerationSettings(enabled=False),
            )
        )
        async with gateway.app:
            yield BotSide(gateway, telegram)
    finally:
        await telegram.stop()
