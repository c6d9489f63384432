"""Users' photos do not outlive their use: uploads are deleted from the object store (local or
S3) once older than RETENTION_UPLOAD_DAYS, by a sweep every RETENTION_PURGE_INTERVAL_S on each
gateway replica (a sweep finding nothing costs one listing). Results have their own period
(GATEWAY_RESULT_RETENTION_DAYS, `results.Results.purge`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from object_store import ObjectStore

log = logging.getLogger(__name__)


class RetentionSettings(BaseSettings):
    """How long the users' uploads are kept."""

    model_config = SettingsConfigDict(env_prefix="RETENTION_", env_file=".env", extra="ignore")

    upload_days: int = Field(default=30, ge=1)
    """An upload (a photo a user sent) is deleted this long after it was stored; 'again' and
    'another preset' on a job whose photo is gone fail as a missing image, refunded."""
    purge_interval_s: float = Field(default=3600.0, gt=0)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UploadRetention:
    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        days: int,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._kept = timedelta(days=days)
        self._clock = clock

    async def purge(self) -> int:
        """Delete the uploads stored before the period began: how many."""
        deleted = await self._store.delete_older_than(self._prefix, self._clock() - self._kept)
        if deleted:
            log.info("deleted %d uploads older than %s", deleted, self._kept)
        return deleted
