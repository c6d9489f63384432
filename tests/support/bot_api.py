"""A base for unit tests' fake Bot API sessions: nothing is downloaded and nothing to close;
each test's subclass says how `make_request` answers."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from aiogram.client.session.base import BaseSession


class OfflineSession(BaseSession):
    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109  (aiogram's signature)
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise AssertionError("no downloads here")
        yield b""

    async def close(self) -> None:
        pass
