"""What one update finds in the gateway's tables, read in one round trip before routing: the
FSM row of its chat and who its user is (`gateway_users`).

Held for that update only (in aiogram's middleware data, `snapshot`, which handlers and the
account middleware take as a parameter), never across updates: the next update of the chat,
on this replica or another, reads afresh. Within the update it behaves as if every
read happened at its start, which is one of the interleavings concurrent updates of a chat
could always produce.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.fsm.context import FSMContext
from aiogram.fsm.middleware import FSMContextMiddleware
from aiogram.types import TelegramObject, User
from sqlalchemy import text
from sqlalchemy.engine import Row

from bot_gateway.domain import KnownUser

if TYPE_CHECKING:
    from bot_gateway.fsm_storage import PostgresStorage

_LOAD = text(
    "SELECT f.state, f.data::text AS data, u.user_id, u.chat_id, u.language, u.blocked, "
    "u.chosen_language "
    "FROM (SELECT 1) AS one "
    "LEFT JOIN gateway_fsm AS f ON f.key = :key "
    "LEFT JOIN gateway_users AS u ON u.telegram_id = :telegram_id"
)


@dataclass(frozen=True)
class FsmRow:
    """A `gateway_fsm` row as aiogram sees it; the data stays JSON, so each read gets its own."""

    state: str | None = None
    data_json: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.data_json) if self.data_json else {}

    @classmethod
    def of(cls, row: Row[Any] | None) -> FsmRow:
        return cls(row.state, row.data) if row is not None else cls()


@dataclass
class UpdateSnapshot:
    fsm: dict[str, FsmRow] = field(default_factory=dict)
    users: dict[int, KnownUser | None] = field(default_factory=dict)


Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class SnapshotMiddleware(BaseMiddleware):
    """aiogram's FSM middleware, reading the update's FSM row and user at once.

    Installed in the FSM middleware's place (`install`): it resolves the update's FSM context
    as that one does, then puts the snapshot in the handlers' data (`snapshot`) and hands them
    an FSMContext whose storage reads through it (`PostgresStorage.within`).
    """

    def __init__(self, storage: PostgresStorage, fsm: FSMContextMiddleware) -> None:
        self._storage = storage
        self._fsm = fsm

    def install(self, observer: Any) -> None:
        """In place of the FSM middleware on the dispatcher's updates."""
        observer.outer_middleware.unregister(self._fsm)
        observer.outer_middleware(self)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        telegram_id = user.id if user is not None else None
        context = self._fsm.resolve_event_context(data["bot"], data)
        data["fsm_storage"] = self._storage
        if context is None:
            data["snapshot"] = await self._load(None, telegram_id)
            return await handler(event, data)
        # the state is read once the lock is held, as aiogram's own middleware does
        async with self._fsm.events_isolation.lock(key=context.key):
            snapshot = await self._load(self._storage.key_of(context.key), telegram_id)
            state = FSMContext(self._storage.within(snapshot), context.key)
            data.update(snapshot=snapshot, state=state, raw_state=await state.get_state())
            return await handler(event, data)

    async def _load(self, key: str | None, telegram_id: int | None) -> UpdateSnapshot:
        snapshot = UpdateSnapshot()
        if key is None and telegram_id is None:
            return snapshot
        async with self._storage.engine.connect() as connection:
            params = {"key": key, "telegram_id": telegram_id}
            row = (await connection.execute(_LOAD, params)).one()
        if key is not None:
            snapshot.fsm[key] = FsmRow(row.state, row.data)
        if telegram_id is not None:
            snapshot.users[telegram_id] = (
                KnownUser(row.user_id, row.chat_id, row.language, row.blocked, row.chosen_language)
                if row.user_id is not None
                else None
            )
        return snapshot
