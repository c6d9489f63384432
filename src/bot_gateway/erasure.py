"""/deletemydata: a user's photos, prompts and profile go; payments and the credit ledger stay,
as the law on accounting requires; the user is told which is which.

Here: every object of theirs (uploads under `uploads/<telegram_id>/`, their results), the
prompts and image keys of their jobs as the gateway knows them, their username and where they
came from; and UserDataErasureRequested, in the same commit, for jobs (its prompts and image
keys) and billing (the username it keeps beside the balance and payments)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiogram.utils.i18n import gettext as _
from sqlalchemy import select, update

from bot_gateway import receipt_contacts
from bot_gateway.conversation import Customer
from bot_gateway.models import GatewayJob, GatewayUser
from contracts.events import UserDataErasureRequested
from messaging.unit_of_work import UnitOfWork
from object_store import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Erased:
    jobs: int
    objects: int


class Erasure:
    def __init__(
        self, unit_of_work: Callable[[], UnitOfWork], store: ObjectStore, upload_prefix: str
    ) -> None:
        self._unit_of_work = unit_of_work
        self._store = store
        self._upload_prefix = upload_prefix

    async def erase(self, customer: Customer) -> Erased:
        mine = GatewayJob.telegram_id == customer.telegram_id
        async with self._unit_of_work() as uow:
            rows = (
                await uow.execute(
                    select(
                        GatewayJob.image_key, GatewayJob.extra_image_keys, GatewayJob.result_key
                    ).where(mine)
                )
            ).all()
            await uow.execute(
                update(GatewayJob)
                .where(mine)
                .values(prompt=None, image_key=None, extra_image_keys=None, result_key=None)
            )
            await uow.execute(
                update(GatewayUser)
                .where(GatewayUser.telegram_id == customer.telegram_id)
                .values(username=None, source=None, source_at=None)
            )
            await uow.execute(receipt_contacts.erase(customer.telegram_id))
            uow.emit(
                UserDataErasureRequested(
                    request_id=uuid.uuid4(),
                    telegram_id=customer.telegram_id,
                    user_id=customer.user_id,
                )
            )
            await uow.commit()
        keys = {
            key for image, extra, result in rows for key in (image, result, *(extra or ())) if key
        }
        deleted = 0
        for key in keys:  # results, and uploads kept under other names (older releases)
            if await self._store.exists(key):
                await self._store.delete(key)
                deleted += 1
            if key.endswith(".png"):  # a result's record beside it
                await self._store.delete(key.removesuffix(".png") + ".json")
        everything = datetime.now(UTC) + timedelta(days=1)
        folder = f"{self._upload_prefix}/{customer.telegram_id}"
        swept = await self._store.delete_older_than(folder, everything)
        log.info(
            "erased the data of %s: %d jobs, %d objects",
            customer.telegram_id,
            len(rows),
            deleted + swept,
        )
        return Erased(jobs=len(rows), objects=deleted + swept)


def explained() -> str:
    return _(
        "🗑 /deletemydata erases your photos and results, the prompts of your requests, and "
        "your profile details (username, where you came from, the email or phone for receipts). "
        "Kept, as the law on accounting requires: your payments, the credit ledger and your "
        "balance. Kept to prevent abuse: the log of refused requests (no photos or prompts in "
        "it). This cannot be undone."
    )


def confirm_button() -> str:
    return _("🗑 Erase my data")


def done(erased: Erased) -> str:
    return _(
        "✅ Erased: {objects} photos and results, the prompts of {jobs} requests, your profile "
        "details; the other parts of the service finish within minutes. Kept: payments, the "
        "credit ledger and the balance (the law on accounting), and the log of refused requests."
    ).format(objects=erased.objects, jobs=erased.jobs)
