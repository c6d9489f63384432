"""The object store the gateway and the runners share: uploads and results, keyed by strings.

One interface (`ObjectStore`), two backends (a local directory, an S3-compatible bucket), one
settings class (`STORAGE_*`) and one key check. No service logic lives here.
"""

from __future__ import annotations

from object_store.interface import ObjectNotFoundError, ObjectStore, ObjectTooLargeError
from object_store.keys import InvalidKeyError, check_key
from object_store.local import LocalObjectStore
from object_store.s3 import S3ObjectStore
from object_store.settings import StorageSettings

__all__ = [
    "InvalidKeyError",
    "LocalObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectTooLargeError",
    "S3ObjectStore",
    "StorageSettings",
    "check_key",
    "create_object_store",
]


def create_object_store(settings: StorageSettings) -> ObjectStore:
    """The backend `STORAGE_BACKEND` names."""
    if settings.backend == "s3":
        return S3ObjectStore.from_settings(settings)
    return LocalObjectStore(settings.local_root)
