"""aiogram FSM storage in PostgreSQL (`gateway_fsm`), so a conversation survives a restart.

Every statement is a single autocommitted one (no BEGIN/COMMIT round trips): a read is one
row, a write one upsert that returns the row it left. Within an update its FSMContext reads
through the update's `UpdateSnapshot` (`within`; see `snapshot`), where the rows read or
written are kept, so the state aiogram reads before routing and the data the handler reads
next cost one query together; the next update reads anew.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import (
    BaseStorage,
    DefaultKeyBuilder,
    KeyBuilder,
    StateType,
    StorageKey,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot_gateway.snapshot import FsmRow, UpdateSnapshot

_READ = text("SELECT state, data::text AS data FROM gateway_fsm WHERE key = :key")
_SET_STATE = text(
    "INSERT INTO gateway_fsm (key, state) VALUES (:key, :state) "
    "ON CONFLICT (key) DO UPDATE SET state = excluded.state, updated_at = now() "
    "RETURNING state, data::text AS data"
)
_CLEAR = text(
    "INSERT INTO gateway_fsm (key, state, data) VALUES (:key, NULL, '{}') "
    "ON CONFLICT (key) DO UPDATE SET state = NULL, data = '{}', updated_at = now() "
    "RETURNING state, data::text AS data"
)
_SET_DATA = text(
    "INSERT INTO gateway_fsm (key, data) VALUES (:key, CAST(:data AS jsonb)) "
    "ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_at = now() "
    "RETURNING state, data::text AS data"
)


async def forget(state: FSMContext) -> None:
    """End the conversation: `state.clear()`, in one write where the storage can."""
    if isinstance(state.storage, PostgresStorage):
        await state.storage.clear(state.key)
    else:
        await state.clear()


class PostgresStorage(BaseStorage):
    def __init__(self, engine: AsyncEngine, key_builder: KeyBuilder | None = None) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        """The service's engine, each statement committing on its own."""
        self._keys = key_builder or DefaultKeyBuilder(with_bot_id=True, with_destiny=True)
        self._snapshot: UpdateSnapshot | None = None

    def within(self, snapshot: UpdateSnapshot) -> PostgresStorage:
        """This storage for one update: it reads through `snapshot` and keeps what it writes
        there (see `snapshot.SnapshotMiddleware`)."""
        view = copy.copy(self)
        view._snapshot = snapshot
        return view

    def key_of(self, key: StorageKey) -> str:
        return self._keys.build(key)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        await self._write(_SET_STATE, self.key_of(key), state=value)

    async def get_state(self, key: StorageKey) -> str | None:
        return (await self._get(key)).state

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self._write(_SET_DATA, self.key_of(key), data=json.dumps(dict(data)))

    async def clear(self, key: StorageKey) -> None:
        """No state, no data: aiogram's `FSMContext.clear()` in one statement instead of two."""
        await self._write(_CLEAR, self.key_of(key))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        return (await self._get(key)).data

    async def close(self) -> None:
        """The engine belongs to the service; nothing to close here."""

    async def _get(self, key: StorageKey) -> FsmRow:
        built = self.key_of(key)
        snapshot = self._snapshot
        if snapshot is not None and built in snapshot.fsm:
            return snapshot.fsm[built]
        async with self.engine.connect() as connection:
            found = (await connection.execute(_READ, {"key": built})).first()
        row = FsmRow.of(found)
        if snapshot is not None:
            snapshot.fsm[built] = row
        return row

    async def _write(self, statement: Any, key: str, **values: Any) -> None:
        async with self.engine.connect() as connection:
            written = (await connection.execute(statement, {"key": key, **values})).first()
        if self._snapshot is not None:
            self._snapshot.fsm[key] = FsmRow.of(written)
