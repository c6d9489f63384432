"""A user's photo or image file: downloaded through getFile, checked, put into the store."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from dataclasses import dataclass

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message

from bot_gateway.images import ImageRejectedError, check_image
from bot_gateway.screening import MODERATION_REFUSED, Screening
from bot_gateway.settings import ConversationSettings
from moderation import Moderation, Verdict
from object_store import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """A stored upload: its object key, and the verdict holding it for an operator, if any."""

    key: str
    held: Verdict | None = None


class UploadRejectedError(ValueError):
    """`reason`: not_an_image, damaged, too_large, too_many_pixels, unsupported_format,
    heif_unsupported, download_failed, moderation_refused."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def carries_image(message: Message) -> bool:
    """A photo, or a file that says it is an image (its bytes are checked later)."""
    if message.photo:
        return True
    document = message.document
    return document is not None and (document.mime_type or "").startswith("image/")


class Uploads:
    def __init__(
        self,
        store: ObjectStore,
        settings: ConversationSettings,
        screening: Screening | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._screening = screening or Screening(Moderation.off())

    async def accept(self, bot: Bot, message: Message, telegram_id: int) -> Upload:
        """The checked upload, stored; `UploadRejectedError` says why not."""
        if message.photo:
            file_id, size = message.photo[-1].file_id, message.photo[-1].file_size
        elif message.document is not None and carries_image(message):
            file_id, size = message.document.file_id, message.document.file_size
        else:
            raise UploadRejectedError("not_an_image")
        limit = self._settings.max_download_bytes
        if size is not None and size > limit:
            raise UploadRejectedError("too_large", f"{size} bytes")
        data = await self._download(bot, file_id, limit)
        try:
            image = await asyncio.to_thread(
                check_image,
                data,
                formats=self._settings.formats,
                max_pixels=self._settings.max_image_pixels,
            )
        except ImageRejectedError as exc:
            raise UploadRejectedError(exc.reason, str(exc)) from exc
        verdict = await self._screening.photo(telegram_id, image.data)  # never stored if refused
        if verdict.refused:
            raise UploadRejectedError(MODERATION_REFUSED, verdict.summary())
        key = f"{self._settings.upload_prefix}/{telegram_id}/{uuid.uuid4().hex}.{image.extension}"
        await self._store.put(key, image.data, content_type=image.content_type)
        log.info(
            "upload %s: %s %dx%d, %d bytes", key, image.format, image.width, image.height, len(data)
        )
        return Upload(key, verdict if verdict.held else None)

    async def _download(self, bot: Bot, file_id: str, limit: int) -> bytes:
        try:
            file = await bot.get_file(file_id)
            if file.file_size is not None and file.file_size > limit:
                raise UploadRejectedError("too_large", f"{file.file_size} bytes")
            if file.file_path is None:
                raise UploadRejectedError("download_failed", "no file_path")
            buffer = io.BytesIO()
            await bot.download_file(file.file_path, destination=buffer)
        except TelegramAPIError as exc:
            if "too big" in exc.message:
                raise UploadRejectedError("too_large", exc.message) from exc
            raise UploadRejectedError("download_failed", exc.message) from exc
        data = buffer.getvalue()
        if len(data) > limit:
            raise UploadRejectedError("too_large", f"{len(data)} bytes")
        return data
