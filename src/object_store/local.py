"""A directory as the store (one machine, or a volume the services share)."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime
from pathlib import Path

from object_store.interface import ObjectNotFoundError, ObjectTooLargeError
from object_store.keys import check_key


class LocalObjectStore:
    """Objects are files under `root`; writes are atomic (temporary file, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        await asyncio.to_thread(self._write, self.path(key), data)

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return await asyncio.to_thread(self._read, key, self.path(key), max_bytes)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        return await asyncio.to_thread(self._delete_older_than, self.path(prefix), cutoff)

    @staticmethod
    def _delete_older_than(folder: Path, cutoff: datetime) -> int:
        deleted = 0
        for path in folder.rglob("*"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff.timestamp():
                    path.unlink()
                    deleted += 1
            except FileNotFoundError:  # deleted meanwhile (another replica's sweep)
                continue
        return deleted

    @staticmethod
    def _read(key: str, path: Path, max_bytes: int | None) -> bytes:
        try:
            with path.open("rb") as file:
                data = file.read() if max_bytes is None else file.read(max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFoundError(key) from exc
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLargeError(f"object {key!r} larger than {max_bytes} bytes")
        return data

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        try:
            with partial.open("wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
