"""What one update finds in the gateway's tables, read in one round trip before routing: the
FSM row of its chat and who its user is (`gateway_users`).

Held for that update only (a ContextVar around it), never across updates: the next update of
the chat, on this replica or another, reads afresh. Within the update it behaves as if every
read happened at its start, which is one of the interleavings concurrent updates of a chat
could always produce.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.fsm.middleware import FSMContextMiddleware
from aiogram.types import TelegramObject, User
from sqlalchemy import text
from sqlalchemy.engine import Row

if TYPE_CHECKING:
    from bot_gateway.fsm_storage import PostgresStorage

_LOAD = text(
    "SELECT f.state, f.data::text AS data, u.user_id, u.chat_id, u.language "
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


@dataclass(frozen=True)
class KnownUser:
    """A `gateway_users` row: billing's account id, private chat and language."""

    user_id: int
    chat_id: int
    language: str


@dataclass
class UpdateSnapshot:
    fsm: dict[str, FsmRow] = field(default_factory=dict)
    users: dict[int, KnownUser | None] = field(default_factory=dict)


_current: ContextVar[UpdateSnapshot | None] = ContextVar("gateway_update_snapshot", default=None)


def current_snapshot() -> UpdateSnapshot | None:
    """The snapshot of the update being handled, or None outside one."""
    return _current.get()


Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class SnapshotMiddleware(BaseMiddleware):
    """Reads the update's FSM row and user at once, for FSM and account lookups to share.

    Registered on the dispatcher's updates just before aiogram's FSM middleware (`install`).
    """

    def __init__(self, storage: PostgresStorage, fsm: FSMContextMiddleware) -> None:
        self._storage = storage
        self._fsm = fsm
        self._engine = storage.engine

    def install(self, observer: Any) -> None:
        """Before the FSM middleware, which reads the state as soon as it runs."""
        observer.outer_middleware.unregister(self._fsm)
        observer.outer_middleware(self)
        observer.outer_middleware(self._fsm)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        context = self._fsm.resolve_event_context(data["bot"], data)
        snapshot = UpdateSnapshot()
        key = self._storage.key_of(context.key) if context is not None else None
        telegram_id = user.id if user is not None else None
        if key is not None or telegram_id is not None:
            async with self._engine.connect() as connection:
                params = {"key": key, "telegram_id": telegram_id}
                row = (await connection.execute(_LOAD, params)).one()
            if key is not None:
                snapshot.fsm[key] = FsmRow(row.state, row.data)
            if telegram_id is not None:
                snapshot.users[telegram_id] = (
                    KnownUser(row.user_id, row.chat_id, row.language)
                    if row.user_id is not None
                    else None
                )
        token = _current.set(snapshot)
        try:
            return await handler(event, data)
        finally:
            _current.reset(token)
