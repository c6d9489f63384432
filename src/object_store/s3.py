"""An S3-compatible bucket as the store (AWS S3, MinIO, ...), through boto3.

boto3 is the optional `s3` extra, imported only when this backend is built. Its client is
blocking and thread-safe: every call runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from object_store.interface import ObjectNotFoundError, ObjectTooLargeError
from object_store.keys import check_key
from object_store.settings import StorageSettings

DELETE_BATCH = 1000
"""Keys per DeleteObjects call: S3's own limit."""
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
"""What HEAD of a missing object answers (no body, so often the bare status)."""


class S3ObjectStore:
    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> S3ObjectStore:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
            config=Config(
                connect_timeout=settings.s3_timeout_s,
                read_timeout=settings.s3_timeout_s,
                retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
            ),
        )
        return cls(client, settings.s3_bucket)

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        await asyncio.to_thread(
            self._client.put_object,
            Bucket=self._bucket,
            Key=check_key(key),
            Body=data,
            ContentType=content_type,
        )

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get, check_key(key), max_bytes)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, check_key(key))

    async def delete(self, key: str) -> None:
        # S3's DeleteObject succeeds whether or not the key exists
        await asyncio.to_thread(self._client.delete_object, Bucket=self._bucket, Key=check_key(key))

    async def delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        return await asyncio.to_thread(self._delete_older_than, check_key(prefix), cutoff)

    def _delete_older_than(self, prefix: str, cutoff: datetime) -> int:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=f"{prefix}/"
        )
        old = [
            item["Key"]
            for page in pages
            for item in page.get("Contents", [])
            if item["LastModified"] < cutoff
        ]
        for start in range(0, len(old), DELETE_BATCH):
            batch = old[start : start + DELETE_BATCH]
            answer = self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            if answer.get("Errors"):
                raise RuntimeError(
                    f"S3 kept {len(answer['Errors'])} objects: {answer['Errors'][:3]}"
                )
        return len(old)

    def _get(self, key: str, max_bytes: int | None) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) == "NoSuchKey":  # not NoSuchBucket: a misconfiguration
                raise ObjectNotFoundError(key) from exc
            raise
        body = response["Body"]
        try:
            if max_bytes is None:
                return bytes(body.read())
            if int(response.get("ContentLength", 0)) > max_bytes:
                raise ObjectTooLargeError(f"object {key!r} larger than {max_bytes} bytes")
            data = bytes(body.read(max_bytes + 1))  # the length a server reports is not trusted
            if len(data) > max_bytes:
                raise ObjectTooLargeError(f"object {key!r} larger than {max_bytes} bytes")
            return data
        finally:
            body.close()

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return False
            raise
        return True


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
