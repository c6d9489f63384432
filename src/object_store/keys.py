"""The one key check: every backend refuses a key before any I/O."""

from __future__ import annotations

import re

# 1-255 characters of [A-Za-z0-9_.=/-], not absolute, no `.` or `..` path segment.
_SAFE_KEY = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_.=/-]{1,255}$")


class InvalidKeyError(ValueError):
    """A key that could escape the store or is not one we write."""


def check_key(key: str) -> str:
    """`key`, if it cannot escape the store; `InvalidKeyError` otherwise."""
    if not _SAFE_KEY.match(key):
        raise InvalidKeyError(f"invalid object key {key!r}")
    return key
