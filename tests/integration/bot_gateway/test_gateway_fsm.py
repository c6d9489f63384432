"""A conversation survives a restart: the FSM lives in PostgreSQL."""

from __future__ import annotations

from aiogram.fsm.storage.base import StorageKey
from sqlalchemy.ext.asyncio import AsyncEngine

from bot_gateway.fsm_storage import PostgresStorage
from support.gateway_harness import new_user


async def test_state_and_data_outlive_the_storage_object(
    gateway_engine: AsyncEngine,
) -> None:
    user = new_user()
    key = StorageKey(bot_id=1, chat_id=user.id, user_id=user.id)
    before = PostgresStorage(gateway_engine)
    await before.set_state(key, "Drafting:waiting_photo")
    await before.update_data(key, {"draft": {"title": "Аниме", "price": 30}})
    await before.close()

    after = PostgresStorage(gateway_engine)  # a new process, as far as the state knows
    assert await after.get_state(key) == "Drafting:waiting_photo"
    assert await after.get_data(key) == {"draft": {"title": "Аниме", "price": 30}}
    await after.set_state(key, None)
    assert await after.get_state(key) is None
    assert await after.get_data(key) == {"draft": {"title": "Аниме", "price": 30}}
    other = StorageKey(bot_id=1, chat_id=user.id + 1, user_id=user.id + 1)
    assert await after.get_data(other) == {}
