"""A user's profile shows the bot's side, answered by the gateway: their language, the `/start`
source they came with and when, when the bot first saw them; an account the bot never talked to
says so."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from support.backend_harness import Running
from support.billing_harness import open_account

pytestmark = pytest.mark.integration


async def get(running: Running, path: str) -> Any:
    async with running.client() as client, client.get(path) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_the_profile_shows_the_start_source_and_language_from_the_gateway(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, telegram_id = await open_account(backend_engine, balance=0, welcome=0)
    source = f"promo_{uuid.uuid4().hex[:6]}"
    came = datetime.now(UTC) - timedelta(days=3)
    async with backend_engine.begin() as connection:  # as the gateway records a /start <payload>
        await connection.execute(
            text(
                "INSERT INTO gateway_users (telegram_id, user_id, chat_id, language, "
                "chosen_language, source, source_at, created_at) "
                "VALUES (:t, :u, :t, 'en', 'en', :s, :at, :at)"
            ),
            {"t": telegram_id, "u": user_id, "s": source, "at": came},
        )
    profile = await get(running, f"/api/v1/users/{user_id}")
    gateway = profile["gateway"]
    assert (gateway["known"], gateway["language"], gateway["chosen_language"]) == (
        True,
        "en",
        "en",
    )
    assert (gateway["source"], gateway["blocked"]) == (source, False)
    assert datetime.fromisoformat(gateway["source_at"]) == came
    assert datetime.fromisoformat(gateway["first_seen"]) == came

    stranger, _ = await open_account(backend_engine, balance=0, welcome=0)
    unknown = (await get(running, f"/api/v1/users/{stranger}"))["gateway"]
    assert (unknown["known"], unknown["source"]) == (False, None)

    async with (  # the panel's profile shows it too
        running.client() as client,
        client.get(f"/panel/users/{user_id}") as response,
    ):
        page = await response.text()
    assert response.status == 200, page
    assert source in page
