"""Moderation of what users send, before any job is requested: their words (every text and
caption, as a middleware before the handlers) and their photos (in `Uploads`, where the bytes
are). A refused input is answered at once and goes no further, so nothing is ever charged.
Results are checked by the runners; a refused one comes back as a failed job, refunded."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject, User
from aiogram.utils.i18n import gettext as _
from PIL import Image

from bot_gateway.middlewares import Handler
from moderation import Moderation, Verdict
from moderation.verdicts import ALLOWED

log = logging.getLogger(__name__)

MODERATION_REFUSED = "moderation_refused"
"""The reason a refused upload (UploadRejectedError) and a refused result (JobFailed) carry."""


class PromptScreening(BaseMiddleware):
    """A message whose words the prompt check refuses is answered here and handled no further."""

    def __init__(self, moderation: Moderation) -> None:
        self._moderation = moderation

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Message):
            return await handler(event, data)
        for words in _words_of(event, data.get("album")):
            verdict = self._moderation.check_prompt(words)
            if verdict.refused:
                user: User | None = data.get("event_from_user")
                log.info("prompt from %s refused: %s", user.id if user else None, verdict.summary())
                await event.answer(prompt_refused())
                return None
        return await handler(event, data)


def _words_of(message: Message, album: list[Message] | None) -> list[str]:
    """Texts and captions; a command (`/start <payload>`) is no prompt."""
    parts = [message, *(album or [])]
    texts = [text for part in parts for text in (part.text, part.caption) if text]
    return [text for text in texts if not text.startswith("/")]


async def screen_image(moderation: Moderation, data: bytes) -> Verdict:
    """The image check on an upload's bytes (already checked to decode)."""
    if moderation.images is None:
        return ALLOWED
    image = await asyncio.to_thread(_decoded, data)
    return await moderation.check_image(image)


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def prompt_refused() -> str:
    return _(
        "🚫 I can't do that: the request breaks the rules (no nudity, undressing or sexual "
        "content, and nothing sexual about minors). Nothing was charged."
    )


def photo_refused() -> str:
    return _(
        "🚫 This photo can't be used: it looks like explicit content, which the rules forbid. "
        "Nothing was charged. Please send another photo."
    )


def result_refused(title: str, price: int | None) -> str:
    if price:
        return _(
            "🚫 «{title}»: the result broke the content rules, so it is not shown. "
            "The {price} credits go back to your balance."
        ).format(title=title, price=price)
    return _(
        "🚫 «{title}»: the result broke the content rules, so it is not shown. Nothing was charged."
    ).format(title=title)
