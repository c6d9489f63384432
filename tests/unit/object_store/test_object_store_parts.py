"""The key check, the settings and the choice of backend; the backends' contract runs against
both of them in tests/integration/object_store."""

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from object_store import (
    InvalidKeyError,
    LocalObjectStore,
    S3ObjectStore,
    StorageSettings,
    check_key,
    create_object_store,
)

GOOD_KEYS = (
    "results/31-request-31.png",
    "results/31-request-31.json",
    "uploads/123456789/0f8fad5b-d9cb-469f-a165-70867728950e.jpeg",
    "a",
    "k=v/x_y.z-1",
    ".hidden/file",
    "a/..b/c..",
    "x" * 255,
)
BAD_KEYS = (
    "",
    "/etc/passwd",
    "../etc/passwd",
    "a/../../b",
    "a/..",
    "..",
    ".",
    "a/./b",
    "a/.",
    "a b",
    "a\\b",
    "a\nb",
    "ключ",
    "a?b",
    "x" * 256,
)


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_keys_we_write_pass_the_check(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_that_could_escape_or_that_we_never_write_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError, match="invalid object key"):
        check_key(key)
    assert issubclass(InvalidKeyError, ValueError)


def test_the_settings_read_the_storage_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv("STORAGE_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("STORAGE_S3_BUCKET", "pictures")
    monkeypatch.setenv("STORAGE_S3_SECRET_ACCESS_KEY", "s3cret")
    settings = StorageSettings(_env_file=None)
    assert (settings.backend, settings.s3_endpoint_url, settings.s3_bucket) == (
        "s3",
        "http://minio:9000",
        "pictures",
    )
    assert settings.s3_secret_access_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_the_backend_is_the_one_the_settings_name(tmp_path: Path) -> None:
    local = create_object_store(StorageSettings(local_root=tmp_path))
    assert isinstance(local, LocalObjectStore)
    assert local.root == tmp_path
    s3 = create_object_store(
        StorageSettings(
            backend="s3",
            s3_endpoint_url="http://127.0.0.1:9",
            s3_access_key_id="id",
            s3_secret_access_key=SecretStr("secret"),
        )
    )
    assert isinstance(s3, S3ObjectStore)


async def test_a_local_write_leaves_no_partial_file_behind(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    await store.put("results/1.png", b"one", content_type="image/png")
    await store.put("results/1.png", b"two", content_type="image/png")
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["1.png"]
    assert (tmp_path / "results" / "1.png").read_bytes() == b"two"


async def test_an_s3_store_that_never_answers_fails_a_call_within_its_timeout() -> None:
    """botocore's own defaults (60 s per read, retried) would hold a runner for minutes."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keep the connection open and say nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = create_object_store(
        StorageSettings(
            backend="s3",
            s3_endpoint_url=f"http://127.0.0.1:{port}",
            s3_access_key_id="id",
            s3_secret_access_key=SecretStr("secret"),
            s3_timeout_s=0.5,
            s3_max_attempts=2,
        )
    )
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match=r"(?i)timeout|timed out"):
            await store.get("uploads/1/a.png")
    finally:
        server.close()
        for writer in accepted:
            writer.close()
    assert time.monotonic() - started < 5
    assert len(accepted) == 2  # one connection per attempt, as configured
