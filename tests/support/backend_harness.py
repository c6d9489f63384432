"""Helpers for the backend API's tests: the operator they sign in as, the running API."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from backend_api.app import BackendApi
from support.backend_gateway import BotSide

OPERATOR, PASSWORD = "alice", "correct horse battery staple"
"""An admin; SUPPORT and VIEWER have the same password and the roles they are named for."""
SUPPORT, VIEWER = "sam", "vic"
ROLES = {OPERATOR: "admin", SUPPORT: "support", VIEWER: "viewer"}


@dataclass
class Running:
    backend: BackendApi
    url: str
    bot: BotSide | None = None
    """The gateway behind it, with the fake Telegram it sends to."""

    def client(self, *, signed_in: bool = True, login: str = OPERATOR) -> aiohttp.ClientSession:
        """An HTTP client of the API: an operator's (HTTP Basic), or nobody's."""
        headers = {"Authorization": basic_auth(login, PASSWORD)} if signed_in else {}
        return aiohttp.ClientSession(
            base_url=self.url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        )


def basic_auth(login: str, password: str) -> str:
    """An Authorization header's value for HTTP Basic."""
    return aiohttp.encode_basic_auth(login, password)
