"""A conversation survives a restart: the FSM lives in PostgreSQL, read once per update."""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.dispatcher.middlewares.user_context import EVENT_CONTEXT_KEY, EventContext
from aiogram.fsm.context import FSMContext
from aiogram.fsm.middleware import FSMContextMiddleware
from aiogram.fsm.storage.base import StorageKey
from aiogram.fsm.storage.memory import DisabledEventIsolation
from aiogram.types import Chat, User
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.ext.asyncio import AsyncEngine

from bot_gateway.fsm_storage import PostgresStorage
from bot_gateway.snapshot import SnapshotMiddleware, UpdateSnapshot
from sandbox.telegram import TOKEN
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


async def test_an_update_reads_its_state_and_user_once_and_hands_them_on_in_its_data(
    gateway_engine: AsyncEngine,
) -> None:
    """The snapshot middleware, in the FSM middleware's place: one statement reads the chat's
    FSM row and the user; the handler gets the snapshot and a state that reads through it;
    what it writes is kept there for the rest of the update, and nothing outlives it."""
    user = new_user()
    storage = PostgresStorage(gateway_engine)
    bot = Bot(TOKEN)
    key = StorageKey(bot_id=bot.id, chat_id=user.id, user_id=user.id)
    await storage.set_state(key, "Drafting:confirming")
    await storage.set_data(key, {"draft": {"title": "Аниме"}})
    fsm = FSMContextMiddleware(storage, DisabledEventIsolation())
    middleware = SnapshotMiddleware(storage, fsm)
    telegram_user = User(id=user.id, is_bot=False, first_name="Tester")
    chat = Chat(id=user.id, type="private")
    seen: dict[str, Any] = {}

    async def handler(event: Any, data: dict[str, Any]) -> None:
        state: FSMContext = data["state"]
        seen["raw_state"] = data["raw_state"]
        seen["data"] = await state.get_data()
        seen["snapshot"] = data["snapshot"]
        await state.set_state(None)
        seen["after"] = await state.get_state()

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    data = {
        "bot": bot,
        "event_from_user": telegram_user,
        EVENT_CONTEXT_KEY: EventContext(chat=chat, user=telegram_user),
    }
    sqlalchemy_events.listen(gateway_engine.sync_engine, "before_cursor_execute", count)
    try:
        await middleware(handler, object(), data)  # type: ignore[arg-type]
    finally:
        sqlalchemy_events.remove(gateway_engine.sync_engine, "before_cursor_execute", count)
        await bot.session.close()

    assert len(statements) == 2  # the snapshot, then the write; no read of state or data
    assert seen["raw_state"] == "Drafting:confirming"
    assert seen["data"] == {"draft": {"title": "Аниме"}}
    snapshot = seen["snapshot"]
    assert isinstance(snapshot, UpdateSnapshot)
    assert snapshot.users == {user.id: None}  # not a gateway user yet
    assert seen["after"] is None  # as written, from the snapshot
    assert await storage.get_state(key) is None  # the storage itself holds no snapshot
