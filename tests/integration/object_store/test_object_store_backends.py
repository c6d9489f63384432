"""Both backends keep one contract: the local directory, and the S3 backend against an
S3-compatible server over a socket (moto's server, started here as a process on a free port).

The S3 store is built as production builds it (`create_object_store` from `STORAGE_*` settings),
so the boto3 client, its endpoint and credentials, and the error mapping all meet a real
HTTP server.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from object_store import (
    InvalidKeyError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLargeError,
    StorageSettings,
    create_object_store,
)
from object_store import s3 as s3_module
from support.s3 import moto_server, s3_client, s3_settings

BAD_KEYS = ("../escape.png", "/etc/passwd", "a/./b", "a/../../b", "", "a b", "x" * 256)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3-compatible server (`moto_server`) listening on 127.0.0.1, for this module."""
    with moto_server(tmp_path_factory.mktemp("moto") / "server.log") as endpoint:
        yield endpoint


@dataclass
class Backend:
    store: ObjectStore
    keys: Callable[[], set[str]]
    """Every object's key, read behind the store's back."""


def _local(root: Path) -> Backend:
    store = create_object_store(StorageSettings(backend="local", local_root=root))

    def keys() -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    return Backend(store, keys)


def _s3(endpoint: str, bucket: str) -> Backend:
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    store = create_object_store(s3_settings(endpoint, bucket))

    def keys() -> set[str]:
        listed = client.list_objects_v2(Bucket=bucket)
        return {item["Key"] for item in listed.get("Contents", [])}

    return Backend(store, keys)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return _local(tmp_path / "objects")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return _s3(endpoint, f"imagebot-{uuid.uuid4().hex[:12]}")


async def test_what_is_put_is_got_back_and_exists(backend: Backend) -> None:
    store = backend.store
    key = "uploads/42/0f8fad5b-d9cb-469f-a165-70867728950e.png"
    data = bytes(range(256)) * 64
    assert not await store.exists(key)
    await store.put(key, data, content_type="image/png")
    assert await store.exists(key)
    assert await store.get(key) == data
    assert await store.get(key, max_bytes=len(data)) == data
    assert backend.keys() == {key}


async def test_a_deleted_object_is_gone_and_deleting_nothing_is_fine(backend: Backend) -> None:
    await backend.store.put("uploads/1/a.jpg", b"a", content_type="image/jpeg")
    await backend.store.put("uploads/1/b.jpg", b"b", content_type="image/jpeg")
    await backend.store.delete("uploads/1/a.jpg")
    assert backend.keys() == {"uploads/1/b.jpg"}
    await backend.store.delete("uploads/1/a.jpg")  # again: nothing there, no error
    with pytest.raises(InvalidKeyError):
        await backend.store.delete("../escape.png")


async def test_a_put_replaces_the_object(backend: Backend) -> None:
    await backend.store.put("results/1-r.json", b'{"v": 1}', content_type="application/json")
    await backend.store.put("results/1-r.json", b'{"v": 2}', content_type="application/json")
    assert await backend.store.get("results/1-r.json", max_bytes=100) == b'{"v": 2}'
    assert backend.keys() == {"results/1-r.json"}


async def test_a_missing_object_is_not_found(backend: Backend) -> None:
    await backend.store.put("results/1.png", b"png", content_type="image/png")
    assert not await backend.store.exists("results/2.png")
    assert not await backend.store.exists("results")  # a prefix is no object
    with pytest.raises(ObjectNotFoundError):
        await backend.store.get("results/2.png", max_bytes=10)
    with pytest.raises(ObjectNotFoundError):
        await backend.store.get("results")


async def test_an_object_past_the_callers_limit_is_refused(backend: Backend) -> None:
    await backend.store.put("uploads/1/big.png", b"x" * 1000, content_type="image/png")
    with pytest.raises(ObjectTooLargeError, match="larger than 999"):
        await backend.store.get("uploads/1/big.png", max_bytes=999)
    assert len(await backend.store.get("uploads/1/big.png", max_bytes=1000)) == 1000


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_a_bad_key_is_refused_before_any_io(backend: Backend, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        await backend.store.put(key, b"x", content_type="image/png")
    with pytest.raises(InvalidKeyError):
        await backend.store.get(key, max_bytes=10)
    with pytest.raises(InvalidKeyError):
        await backend.store.exists(key)
    assert backend.keys() == set()


async def test_many_calls_at_once_stay_apart(backend: Backend) -> None:
    keys = [f"results/{n}-request-{n}.png" for n in range(32)]
    await asyncio.gather(
        *(backend.store.put(k, k.encode(), content_type="image/png") for k in keys)
    )
    got = await asyncio.gather(*(backend.store.get(k, max_bytes=100) for k in keys))
    assert got == [k.encode() for k in keys]
    assert backend.keys() == set(keys)


async def test_s3_keeps_the_content_type(s3_endpoint: str) -> None:
    bucket = f"imagebot-{uuid.uuid4().hex[:12]}"
    backend = _s3(s3_endpoint, bucket)
    await backend.store.put("results/7-r.png", b"\x89PNG", content_type="image/png")
    head = s3_client(s3_endpoint).head_object(Bucket=bucket, Key="results/7-r.png")
    assert head["ContentType"] == "image/png"


async def test_a_missing_bucket_is_an_error_not_a_missing_object(s3_endpoint: str) -> None:
    """The runner fails a job for good on a missing input, but retries a store it cannot use."""
    store = create_object_store(s3_settings(s3_endpoint, f"absent-{uuid.uuid4().hex[:12]}"))
    with pytest.raises(Exception, match="NoSuchBucket") as raised:
        await store.get("results/1.png", max_bytes=10)
    assert not isinstance(raised.value, ObjectNotFoundError)
    with pytest.raises(Exception, match="NoSuchBucket"):
        await store.put("results/1.png", b"png", content_type="image/png")


async def test_objects_under_a_prefix_written_before_the_cutoff_are_deleted(
    backend: Backend,
) -> None:
    """The results' retention: only what is under the prefix, and only what is older."""
    kept = {"uploads/1/a.png", "results-x/1.png", "resultsy.png"}
    results = {"results/1-r.png", "results/1-r.json", "results/sub/2-r.png"}
    for key in kept | results:
        await backend.store.put(key, b"x", content_type="image/png")
    now = datetime.now(UTC)
    assert await backend.store.delete_older_than("results", now - timedelta(minutes=5)) == 0
    assert backend.keys() == kept | results
    assert await backend.store.delete_older_than("results", now + timedelta(minutes=5)) == 3
    assert backend.keys() == kept
    assert await backend.store.delete_older_than("results", now + timedelta(minutes=5)) == 0
    assert await backend.store.delete_older_than("absent", now + timedelta(minutes=5)) == 0
    with pytest.raises(InvalidKeyError):
        await backend.store.delete_older_than("../results", now)


async def test_only_the_older_objects_under_the_prefix_go(tmp_path: Path) -> None:
    """Ages side by side (a local file's time can be set; S3 sets LastModified itself)."""
    backend = _local(tmp_path / "objects")
    for key in ("results/old.png", "results/new.png"):
        await backend.store.put(key, b"x", content_type="image/png")
    month_ago = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    os.utime(tmp_path / "objects" / "results/old.png", (month_ago, month_ago))
    cutoff = datetime.now(UTC) - timedelta(days=7)
    assert await backend.store.delete_older_than("results", cutoff) == 1
    assert backend.keys() == {"results/new.png"}


async def test_s3_deletes_in_batches_of_its_limit(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 2)
    backend = _s3(s3_endpoint, f"imagebot-{uuid.uuid4().hex[:12]}")
    for n in range(5):
        await backend.store.put(f"results/{n}.png", b"x", content_type="image/png")
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert await backend.store.delete_older_than("results", later) == 5
    assert backend.keys() == set()
