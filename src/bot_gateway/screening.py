"""Moderation of what users send, before any job is requested: their words (every text and
caption, as a middleware before the handlers) and their photos (in `Uploads`, where the bytes
are). A refused input is answered at once and goes no further, so nothing is ever charged; each
refusal is logged and counted (`restrictions`), and a restricted user's updates stop at
`RestrictionGate`. Results are checked by the runners; a refused one comes back as a failed job,
refunded."""

from __future__ import annotations

import asyncio
import io
import logging
import math
from datetime import datetime
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject, User
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from PIL import Image

from bot_gateway.fingerprints import UploadFingerprints, pixel_digest
from bot_gateway.middlewares import Handler
from bot_gateway.restrictions import Kind, Restrictions, Standing
from moderation import Moderation, Verdict
from moderation.verdicts import ALLOWED

log = logging.getLogger(__name__)

MODERATION_REFUSED = "moderation_refused"
"""The reason a refused upload (UploadRejectedError) and a refused result (JobFailed) carry."""


class Screening:
    """The checks on a user's input, each refusal logged (and counted towards a suspension);
    an accepted photo's pixels are fingerprinted (identical uploads across accounts)."""

    def __init__(
        self,
        moderation: Moderation,
        restrictions: Restrictions | None = None,
        fingerprints: UploadFingerprints | None = None,
    ) -> None:
        self.moderation = moderation
        self.restrictions = restrictions
        self.fingerprints = fingerprints

    async def words(self, telegram_id: int, texts: list[str]) -> Verdict:
        for words in texts:
            verdict = self.moderation.check_prompt(words)
            if verdict.refused:
                await self._refused(telegram_id, "prompt", verdict)
                return verdict
        return ALLOWED

    async def photo(self, telegram_id: int, data: bytes) -> Verdict:
        """The image check on an upload's bytes (already checked to decode): refused, held
        (for an operator, once the user asks for a job) or allowed."""
        if self.moderation.images is None and self.fingerprints is None:
            return ALLOWED
        image = await asyncio.to_thread(_decoded, data)
        verdict = await self.moderation.check_image(image)
        log.info("upload from %s moderation: %s", telegram_id, verdict.summary())
        if verdict.refused:
            await self._refused(telegram_id, "photo", verdict)
        elif self.fingerprints is not None:
            await self.fingerprints.seen(telegram_id, await asyncio.to_thread(pixel_digest, image))
        return verdict

    async def _refused(self, telegram_id: int, subject: str, verdict: Verdict) -> None:
        log.info("%s from %s refused: %s", subject, telegram_id, verdict.summary())
        if self.restrictions is not None:
            await self.restrictions.refused(
                telegram_id,
                subject,
                verdict.category,
                verdict.summary(),
                scores=verdict.scores,
                check=verdict.check,
            )


class PromptScreening(BaseMiddleware):
    """A message whose words the prompt check refuses is answered here and handled no further."""

    def __init__(self, screening: Screening) -> None:
        self._screening = screening

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if not isinstance(event, Message) or user is None:
            return await handler(event, data)
        verdict = await self._screening.words(user.id, _words_of(event, data.get("album")))
        if verdict.refused:
            await event.answer(prompt_refused())
            return None
        return await handler(event, data)


class RestrictionGate(BaseMiddleware):
    """A banned, suspended or slowed-down user is told so, and nothing they send is handled."""

    def __init__(self, restrictions: Restrictions) -> None:
        self._restrictions = restrictions

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None or (isinstance(event, Message) and event.successful_payment):
            return await handler(event, data)  # Stars taken (an invoice sent before) are credited
        found = await self._restrictions.standing(user.id)
        if found.kind is Kind.ok or _a_right(event):
            return await handler(event, data)
        log.info("update from %s not handled: %s", user.id, found.kind.value)
        text = restricted(found, self._restrictions.clock())
        if isinstance(event, CallbackQuery):
            await event.answer(text, show_alert=True)
        elif isinstance(event, Message):
            await event.answer(text)
        return None


RIGHTS = ("/privacy", "/deletemydata", "/paysupport", "/terms")
"""Commands a restricted user keeps: their data and their money are theirs all the same."""


def _a_right(event: TelegramObject) -> bool:
    if isinstance(event, CallbackQuery):
        return event.data == "erase:confirm"
    if isinstance(event, Message) and event.text:
        return event.text.split(maxsplit=1)[0].split("@")[0] in RIGHTS
    return False


def _words_of(message: Message, album: list[Message] | None) -> list[str]:
    """Texts and captions; a command (`/start <payload>`) is no prompt."""
    parts = [message, *(album or [])]
    texts = [text for part in parts for text in (part.text, part.caption) if text]
    return [text for text in texts if not text.startswith("/")]


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


def restricted(found: Standing, now: datetime) -> str:
    if found.kind is Kind.banned:
        return _("⛔ The bot is closed to you: {reason}").format(reason=found.reason)
    until = found.until or now
    if found.kind is Kind.suspended:
        return _(
            "⏸ Your requests are suspended until {until} UTC after repeated requests that broke "
            "the rules."
        ).format(until=f"{until:%Y-%m-%d %H:%M}")
    return _(
        "⏳ Several requests were refused: please wait {seconds} s before the next one."
    ).format(seconds=max(1, math.ceil((until - now).total_seconds())))


def result_refused(title: str, price: int | None) -> str:
    if price:
        return ngettext(
            "🚫 «{title}»: the result broke the content rules, so it is not shown. "
            "The {price} credit goes back to your balance.",
            "🚫 «{title}»: the result broke the content rules, so it is not shown. "
            "The {price} credits go back to your balance.",
            price,
        ).format(title=title, price=price)
    return _(
        "🚫 «{title}»: the result broke the content rules, so it is not shown. Nothing was charged."
    ).format(title=title)
