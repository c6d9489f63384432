"""Uploads past RETENTION_UPLOAD_DAYS are deleted by the gateway's sweep, from the local store
and from an S3-compatible one (moto's server over a socket), with the clock moved forward;
nothing else under the store (results, other prefixes) is touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot_gateway.retention import UploadRetention
from object_store import LocalObjectStore, ObjectStore, create_object_store
from support.s3 import moto_server, s3_client, s3_settings

KEYS = ("uploads/101/a.jpg", "uploads/202/b.png", "results/7-request.png", "other/c.txt")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "server.log") as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path)
    endpoint: str = request.getfixturevalue("s3_endpoint")
    bucket = f"retention-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return create_object_store(s3_settings(endpoint, bucket))


async def remaining(store: ObjectStore) -> set[str]:
    return {key for key in KEYS if await store.exists(key)}


async def test_uploads_go_once_past_their_period_and_nothing_else(store: ObjectStore) -> None:
    for key in KEYS:
        await store.put(key, b"photo", content_type="application/octet-stream")
    now = datetime.now(UTC)
    moved = now

    def clock() -> datetime:
        return moved

    sweep = UploadRetention(store, "uploads", days=30, clock=clock)
    assert await sweep.purge() == 0
    moved = now + timedelta(days=29)  # within the period: kept
    assert await sweep.purge() == 0
    assert await remaining(store) == set(KEYS)
    moved = now + timedelta(days=31)
    assert await sweep.purge() == 2
    assert await remaining(store) == {"results/7-request.png", "other/c.txt"}
    assert await sweep.purge() == 0  # a sweep of nothing deletes nothing
