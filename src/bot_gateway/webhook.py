"""`POST /telegram/webhook`: updates pushed by Telegram, admitted only with our secret token."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from faststream.asgi.types import Receive, Scope, Send
from pydantic import ValidationError

from messaging.metrics import WEBHOOK_RESPONSES

log = logging.getLogger(__name__)

PATH = "/telegram/webhook"
SECRET_HEADER = b"x-telegram-bot-api-secret-token"
MAX_BODY_BYTES = 1_000_000


class TelegramWebhook:
    """A raw ASGI app; 200 only once the update was handled, so an update in hand when the
    process dies is delivered again by Telegram (a repeat is harmless: request ids derive from
    what was tapped). Handling is shielded from a dropped connection."""

    def __init__(self, dispatcher: Dispatcher, bot: Bot, secret: str) -> None:
        self._dispatcher = dispatcher
        self._bot = bot
        self._secret = secret.encode()
        self.in_flight: set[asyncio.Task[Any]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, reason = await self._admit(scope, receive)
        if status != 200:
            log.warning("telegram webhook refused (%d): %s", status, reason)
        WEBHOOK_RESPONSES.labels("telegram", str(status)).inc()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": reason.encode()})

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[int, str]:
        if scope.get("method") != "POST":
            return 405, "method not allowed"
        headers = dict(scope.get("headers") or [])
        if not hmac.compare_digest(headers.get(SECRET_HEADER, b""), self._secret):
            return 401, "bad secret token"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                return 413, "too large"
            if not message.get("more_body"):
                break
        try:
            update = Update.model_validate_json(body, context={"bot": self._bot})
        except ValidationError:
            return 400, "not an update"
        task = asyncio.create_task(self._dispatcher.feed_update(self._bot, update))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        try:
            await asyncio.shield(task)
        except Exception:
            log.exception("update %s failed; Telegram will deliver it again", update.update_id)
            return 500, "failed"
        return 200, "ok"
