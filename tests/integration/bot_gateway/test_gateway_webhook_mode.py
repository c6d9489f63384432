"""Webhook mode: the gateway registers its URL and secret with Telegram and handles pushed
updates only when they carry that secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot_gateway.app import build
from bot_gateway.settings import TelegramSettings
from contracts.topology import Topology
from messaging.settings import BrokerSettings
from sandbox.telegram import TOKEN, TelegramSandbox
from support.database import DatabaseFactory, migrated_database
from support.gateway_harness import gateway_settings, new_user

SECRET = "webhook-secret-for-tests"


async def test_pushed_updates_are_handled_only_with_the_secret(
    databases: DatabaseFactory, amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    # A database of its own: on the shared gateway database, the shared stack's relays and
    # sender would take this gateway's outbox rows and outbound messages (and it theirs).
    database_url = await migrated_database(databases, "webhook")
    telegram = TelegramSandbox()
    await telegram.start()
    settings = gateway_settings(
        database_url,
        amqp_url,
        topology,
        telegram,
        tmp_path,
        broker=BrokerSettings(url=amqp_url, namespace=topology.namespace, rpc_timeout_s=0.5),  # type: ignore[arg-type]
    )
    settings.telegram = TelegramSettings(
        bot_token=TOKEN,  # type: ignore[arg-type]
        api_url=telegram.base_url,
        mode="webhook",
        webhook_url="https://bot.example.org",
        webhook_secret=SECRET,  # type: ignore[arg-type]
    )
    gateway = build(settings)
    user = new_user("en")
    update = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": user.id, "type": "private"},
            "from": user.as_dict(),
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }
    async with gateway.app:
        assert telegram.webhook["url"] == "https://bot.example.org/telegram/webhook"
        assert telegram.webhook["secret_token"] == SECRET
        assert await _post(gateway.app, update, "wrong") == 401
        assert await _post(gateway.app, update, SECRET) == 200
        # 200 came once the update was handled: nobody serves billing in this namespace, and
        # the user has already been told that the service is busy
        assert not gateway.webhook.in_flight
        answer = await telegram.wait_for(user.id, "The service is busy right now", timeout_s=0)
        assert answer.method == "sendMessage"
    assert not any(call.method == "getUpdates" for call in telegram.calls)
    await telegram.stop()


async def _post(app: Any, update: dict[str, Any], secret: str) -> int:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/telegram/webhook",
        "raw_path": b"/telegram/webhook",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"x-telegram-bot-api-secret-token", secret.encode()),
        ],
    }
    chunks = [{"type": "http.request", "body": json.dumps(update).encode(), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])
