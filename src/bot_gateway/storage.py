"""The object store the gateway puts uploads into and reads results from (keys, not paths).

The runners share it through the same STORAGE_* settings; the gateway keeps its own small
client rather than importing another service's package.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any, Protocol

from bot_gateway.settings import StorageSettings

_SAFE_KEY = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_.=/-]{1,255}$")


class ObjectNotFoundError(KeyError):
    """No object under that key."""


def checked(key: str) -> str:
    """`key`, if it cannot escape the store."""
    if not _SAFE_KEY.match(key):
        raise ValueError(f"invalid object key {key!r}")
    return key


class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes, *, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes: ...


class LocalObjectStore:
    """A directory; writes are atomic (temporary file, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        await asyncio.to_thread(self._write, self.root / checked(key), data)

    async def get(self, key: str) -> bytes:
        path = self.root / checked(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(key) from exc

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        with partial.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)


class S3ObjectStore:
    """An S3-compatible bucket through boto3 (the optional `s3` extra), off the event loop."""

    def __init__(self, settings: StorageSettings) -> None:
        import boto3

        self._bucket = settings.s3_bucket
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
        )

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        await asyncio.to_thread(
            self._client.put_object,
            Bucket=self._bucket,
            Key=checked(key),
            Body=data,
            ContentType=content_type,
        )

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, checked(key))

    def _get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
        except self._client.exceptions.NoSuchKey as exc:
            raise ObjectNotFoundError(key) from exc
        return bytes(response["Body"].read())


def create_object_store(settings: StorageSettings) -> ObjectStore:
    if settings.backend == "s3":
        return S3ObjectStore(settings)
    return LocalObjectStore(settings.local_root)
