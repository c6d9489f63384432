"""A user's paid results after delivery: kept for GATEWAY_RESULT_RETENTION_DAYS under the object
store's results prefix, sent again on request (from /history, or as a file in original
quality), and deleted from the store once past it.

A job's result key and completion time are kept on its row when JobSucceeded delivers it
(`Change.result_key`); only the user's own results, within the retention, are found here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bot_gateway.conversation import Customer
from bot_gateway.domain import ResultView
from bot_gateway.repository import Jobs
from bot_gateway.settings import ConversationSettings
from messaging.unit_of_work import UnitOfWork
from object_store import ObjectNotFoundError, ObjectStore

log = logging.getLogger(__name__)


class Results:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        store: ObjectStore,
        settings: ConversationSettings,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._store = store
        self._prefix = settings.result_prefix
        self.retention_days = settings.result_retention_days

    def _kept_since(self) -> datetime:
        return datetime.now(UTC) - timedelta(days=self.retention_days)

    async def kept(self, customer: Customer, job_ids: list[int]) -> dict[int, uuid.UUID]:
        """The request of each of these jobs of the user whose result is still kept."""
        if not job_ids:
            return {}
        async with self._unit_of_work() as uow:
            return await Jobs(uow.read).kept_results(
                customer.telegram_id, job_ids, self._kept_since()
            )

    async def find(self, customer: Customer, request_id: uuid.UUID) -> ResultView | None:
        """The user's own delivered result (kept or not); someone else's is None."""
        async with self._unit_of_work() as uow:
            found = await Jobs(uow.read).result(request_id)
        if found is None or found.telegram_id != customer.telegram_id or not found.result_key:
            return None
        return found

    async def image(self, result: ResultView) -> bytes | None:
        """The result's bytes; None once it is past the retention (or already deleted)."""
        if result.result_key is None or result.completed_at is None:
            return None
        if result.completed_at < self._kept_since():
            return None
        try:
            return await self._store.get(result.result_key)
        except ObjectNotFoundError:
            log.info("result %s of request %s is gone", result.result_key, result.request_id)
            return None

    async def purge(self) -> int:
        """Delete the results written before the retention began: how many objects."""
        deleted = await self._store.delete_older_than(self._prefix, self._kept_since())
        if deleted:
            log.info("deleted %d results older than %d days", deleted, self.retention_days)
        return deleted
