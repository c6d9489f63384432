"""Webhook mode: only Telegram (who knows our secret token) may push updates."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Message

from bot_gateway.webhook import TelegramWebhook

SECRET = "s3cret-token"
UPDATE = {
    "update_id": 1,
    "message": {
        "message_id": 5,
        "date": 0,
        "chat": {"id": 9, "type": "private"},
        "from": {"id": 9, "is_bot": False, "first_name": "A"},
        "text": "hi",
    },
}


async def post(webhook: TelegramWebhook, body: bytes, headers: dict[str, str]) -> int:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/telegram/webhook",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    chunks = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await webhook(scope, receive, send)  # type: ignore[arg-type]
    return int(sent[0]["status"])


async def test_updates_need_the_secret_token() -> None:
    seen: list[str] = []
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def record(message: Message) -> None:
        seen.append(message.text or "")

    bot = Bot("42:unit-test-token")
    webhook = TelegramWebhook(dispatcher, bot, SECRET)
    body = json.dumps(UPDATE).encode()
    assert await post(webhook, body, {}) == 401
    assert await post(webhook, body, {"X-Telegram-Bot-Api-Secret-Token": "guess"}) == 401
    assert await post(webhook, b"{not json", {"X-Telegram-Bot-Api-Secret-Token": SECRET}) == 400
    assert await post(webhook, body, {"X-Telegram-Bot-Api-Secret-Token": SECRET}) == 200
    await asyncio.gather(*webhook.in_flight)
    assert seen == ["hi"]
    await bot.session.close()
