"""`STORAGE_*`: which backend, and where; the gateway and the runners read the same variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    """The object store holding uploads and results: a local directory, or S3-compatible."""

    model_config = SettingsConfigDict(env_prefix="STORAGE_", env_file=".env", extra="ignore")

    backend: Literal["local", "s3"] = "local"
    local_root: Path = Path("data/objects")
    """The directory (`local`); every service using the store must see the same one."""
    s3_endpoint_url: str = ""
    """Empty for AWS S3; e.g. `http://minio:9000` for MinIO (path-style addressing)."""
    s3_bucket: str = "imagebot"
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    """Empty: boto3's own credential chain (environment, profile, instance role)."""
    s3_secret_access_key: SecretStr = SecretStr("")
    s3_timeout_s: float = Field(default=10.0, gt=0)
    """Connect and read timeout of each S3 call: an unreachable store fails a call in seconds
    (botocore's own default is 60 s each, times its retries)."""
    s3_max_attempts: int = Field(default=3, ge=1)
    """Attempts per S3 call, the first included (botocore's standard retry mode)."""
