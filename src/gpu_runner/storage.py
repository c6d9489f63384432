"""The object store: inputs come from it, results go into it, keyed by plain strings."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path
from typing import Any, Protocol

from gpu_runner.settings import StorageSettings

_SAFE_KEY = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_.=/-]{1,255}$")


class ObjectNotFoundError(KeyError):
    """No object under that key."""


class InvalidKeyError(ValueError):
    """A key that could escape the store or is not one we write."""


def check_key(key: str) -> str:
    if not _SAFE_KEY.match(key):
        raise InvalidKeyError(f"invalid object key {key!r}")
    return key


class ObjectStore(Protocol):
    async def get(self, key: str, *, max_bytes: int) -> bytes: ...

    async def put(self, key: str, data: bytes, *, content_type: str) -> None: ...

    async def exists(self, key: str) -> bool: ...


class LocalObjectStore:
    """A directory; writes are atomic (temporary file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def get(self, key: str, *, max_bytes: int) -> bytes:
        return await asyncio.to_thread(self._read, self.path(key), max_bytes)

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        await asyncio.to_thread(self._write, self.path(key), data)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    @staticmethod
    def _read(path: Path, max_bytes: int) -> bytes:
        try:
            with path.open("rb") as file:
                data = file.read(max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(str(path)) from exc
        if len(data) > max_bytes:
            raise ObjectTooLargeError(f"object larger than {max_bytes} bytes")
        return data

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        with partial.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)


class ObjectTooLargeError(ValueError):
    """The object exceeds the size the caller accepts."""


class S3ObjectStore:
    """An S3-compatible bucket (MinIO, AWS, ...) through boto3, run off the event loop."""

    def __init__(self, settings: StorageSettings) -> None:
        import boto3  # the optional `s3` extra; imported only when configured

        self._bucket = settings.s3_bucket
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
        )

    async def get(self, key: str, *, max_bytes: int) -> bytes:
        return await asyncio.to_thread(self._get, check_key(key), max_bytes)

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        await asyncio.to_thread(
            self._client.put_object,
            Bucket=self._bucket,
            Key=check_key(key),
            Body=data,
            ContentType=content_type,
        )

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, check_key(key))

    def _get(self, key: str, max_bytes: int) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
        except self._client.exceptions.NoSuchKey as exc:
            raise ObjectNotFoundError(key) from exc
        if int(response.get("ContentLength", 0)) > max_bytes:
            response["Body"].close()
            raise ObjectTooLargeError(f"object larger than {max_bytes} bytes")
        return bytes(response["Body"].read())

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def create_object_store(settings: StorageSettings) -> ObjectStore:
    if settings.backend == "s3":
        return S3ObjectStore(settings)
    return LocalObjectStore(settings.local_root)
