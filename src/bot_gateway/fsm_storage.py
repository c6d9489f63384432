"""aiogram FSM storage in PostgreSQL (`gateway_fsm`), so a conversation survives a restart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import (
    BaseStorage,
    DefaultKeyBuilder,
    KeyBuilder,
    StateType,
    StorageKey,
)
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot_gateway.models import FsmRecord


class PostgresStorage(BaseStorage):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], key_builder: KeyBuilder | None = None
    ) -> None:
        self._sessions = sessions
        self._keys = key_builder or DefaultKeyBuilder(with_bot_id=True, with_destiny=True)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        await self._upsert(key, {"state": value})

    async def get_state(self, key: StorageKey) -> str | None:
        record = await self._get(key)
        return record.state if record else None

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self._upsert(key, {"data": dict(data)})

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        record = await self._get(key)
        return dict(record.data) if record else {}

    async def close(self) -> None:
        """The engine belongs to the service; nothing to close here."""

    async def _get(self, key: StorageKey) -> FsmRecord | None:
        async with self._sessions() as session:
            found = await session.execute(
                select(FsmRecord).where(FsmRecord.key == self._keys.build(key))
            )
            return found.scalar_one_or_none()

    async def _upsert(self, key: StorageKey, values: dict[str, Any]) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                insert(FsmRecord)
                .values(key=self._keys.build(key), **values)
                .on_conflict_do_update(
                    index_elements=[FsmRecord.key], set_={**values, "updated_at": func.now()}
                )
            )
