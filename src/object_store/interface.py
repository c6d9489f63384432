"""What every backend offers, and the errors it raises beside `InvalidKeyError`."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class ObjectNotFoundError(KeyError):
    """No object under that key."""


class ObjectTooLargeError(ValueError):
    """The object exceeds the size the caller accepts."""


class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store `data` under `key`, replacing what was there; readers never see it half written."""
        ...

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; `ObjectNotFoundError`, or `ObjectTooLargeError` past `max_bytes`."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Delete the object; nothing happens when there is none."""
        ...

    async def delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        """Delete every object under `prefix/` last written before `cutoff`: how many."""
        ...
