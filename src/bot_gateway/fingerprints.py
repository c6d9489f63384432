"""Identical uploads, a farming signal: the SHA-256 of each upload's decoded pixels (its size
and RGB bytes, so a re-encoded or renamed copy of the same picture matches, a resized or
retouched one does not: an exact hash, not a perceptual one), kept once per account. When
`min_accounts` accounts have uploaded the same pixels, each of them is reported to billing
(SharedUploadSeen), which withholds their weekly bonus until they pay; later uploaders of it are
reported as they come."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from bot_gateway.models import UploadFingerprint
from contracts.events import SharedUploadSeen
from messaging.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


def pixel_digest(image: Image.Image) -> bytes:
    """SHA-256 of the image's size and RGB pixels (CPU: run it off the event loop)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.digest()


class UploadFingerprints:
    def __init__(self, unit_of_work: Callable[[], UnitOfWork], min_accounts: int) -> None:
        self._unit_of_work = unit_of_work
        self.min_accounts = min_accounts

    async def seen(self, telegram_id: int, digest: bytes) -> int:
        """Record that `telegram_id` uploaded `digest`; how many accounts have uploaded it."""
        async with self._unit_of_work() as uow:
            new = await uow.execute(
                insert(UploadFingerprint)
                .values(digest=digest, telegram_id=telegram_id)
                .on_conflict_do_nothing()
                .returning(UploadFingerprint.telegram_id)
            )
            if new.first() is None:
                return await self._accounts(uow, digest)  # theirs already: nothing new
            accounts = await self._accounts(uow, digest)
            if accounts >= self.min_accounts >= 2:
                await self._report(uow, telegram_id, digest, accounts)
            await uow.commit()
        return accounts

    async def _report(
        self, uow: UnitOfWork, telegram_id: int, digest: bytes, accounts: int
    ) -> None:
        """The new uploader; at the threshold, every account that uploaded it so far."""
        if accounts == self.min_accounts:
            rows = await uow.execute(
                select(UploadFingerprint.telegram_id).where(UploadFingerprint.digest == digest)
            )
            reported = [row.telegram_id for row in rows]
        else:
            reported = [telegram_id]
        log.warning(
            "upload %s… shared by %d accounts: reporting %s",
            digest.hex()[:12],
            accounts,
            reported,
        )
        for account in reported:
            uow.emit(SharedUploadSeen(telegram_id=account, accounts=accounts, digest=digest.hex()))

    @staticmethod
    async def _accounts(uow: UnitOfWork, digest: bytes) -> int:
        counted = await uow.execute(
            select(func.count())
            .select_from(UploadFingerprint)
            .where(UploadFingerprint.digest == digest)
        )
        return int(counted.scalar_one())
