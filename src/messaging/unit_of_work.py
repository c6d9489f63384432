"""One unit of work per message: the state change, the inbox mark and the events it causes.

The one mechanism every service uses to change its tables:

- `apply(change)`: the common case. A use case decides (the domain, on facts read or
  remembered) and hands over the guarded change (an UPDATE/INSERT ... RETURNING, or a SELECT
  whose CTEs change rows). The change, the mark of the message that caused it and the outbox
  rows of the events emitted for it become ONE statement, which commits on its own when no
  transaction is open. It returns the changed row; None when the guard missed (the facts moved
  meanwhile): nothing was written, and the use case reads again and decides again.
- `execute(...)` / `session`: several statements in one transaction (a per-user lock, a
  dispatch); `commit()` then writes the mark and the outbox rows in one statement and commits.
- `commit()` alone: a decision that changes nothing but still answers (a refusal, say).

A message handled already is found by its mark: the statement that would write it a second
time fails and rolls back with it, and `AlreadyHandled` says so. Events go to the relay, and
`after_commit` callbacks run, only once the commit succeeded.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias

from sqlalchemy import (
    Row,
    String,
    bindparam,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql import ColumnElement, Executable
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.selectable import CTE, Select
from sqlalchemy.types import Text, Uuid

from contracts.envelope import Event, RawEnvelope, new_envelope
from messaging.database import unique_violation
from messaging.tables import DeliveryTables

log = logging.getLogger(__name__)

Change: TypeAlias = Insert | Update | Delete | Select[Any]
"""A guarded change with RETURNING (or a SELECT over CTEs that change rows): no row, no change."""
Committed = tuple[str, RawEnvelope]
"""An outbox row as its writer knows it: routing key and envelope."""


class AlreadyHandled(Exception):
    """The message's mark was there already: nothing of this unit was written."""


@dataclass
class _Emitted:
    routing_key: str
    envelope: RawEnvelope
    fill: tuple[tuple[str, str], ...] = ()
    """(field, column): fields of the event's data taken from the changed row, as it came out."""


class UnitOfWork:
    """Rolls back unless committed; `cause` (the message being handled) is marked handled in
    the commit, and the events emitted into the unit reach the outbox in it.

    It takes one pooled connection at its first statement: in a transaction when that statement
    needs one (`execute`, `orm`), else autocommitting whatever `engine` says, so a read, an
    `apply` or a `commit` outside a transaction is one round trip with no BEGIN/COMMIT. After a
    commit or a rollback the next statement picks its connection kind again."""

    def __init__(
        self,
        engine: AsyncEngine,
        tables: DeliveryTables,
        *,
        source: str,
        cause: RawEnvelope | None = None,
        on_commit: Callable[[Sequence[Committed]], None] = lambda rows: None,
    ) -> None:
        self._engine = engine
        self._autocommit = _autocommitting(engine)
        self._tables = tables
        self._source = source
        self.cause = cause
        self._on_commit = on_commit
        self._emitted: list[_Emitted] = []
        self._after_commit: list[Callable[[], None]] = []
        self._connection: AsyncConnection | None = None
        self._session: AsyncSession | None = None
        self._in_transaction = False
        self._switched = False  # an autocommitting connection in a transaction for now
        self._taken_in_transaction = False  # a connection that never autocommits
        self.committed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._session is not None:
                await self._session.close()
        finally:
            if self._connection is not None:
                await self._connection.close()  # rolls back whatever was not committed

    @property
    def connection(self) -> AsyncConnection:
        """The unit's connection, once it has run a statement."""
        if self._connection is None:
            raise RuntimeError("this unit of work has run no statement yet")
        return self._connection

    async def _connected(self, *, transaction: bool) -> AsyncConnection:
        """The unit's one connection, taken at its first statement: in a transaction if that
        statement needs one, else autocommitting (and switched to a transaction only if a later
        statement needs one)."""
        if self._connection is None:
            if transaction and self._engine is not self._autocommit:
                self._connection = await self._engine.connect()
                await self._connection.begin()
                self._in_transaction = self._taken_in_transaction = True
                return self._connection
            self._connection = await self._autocommit.connect()
        if transaction:
            await self._begin()
        return self._connection

    async def orm(self) -> AsyncSession:
        """An ORM session in this unit's transaction, for the few models that want one."""
        self._still_open()
        connection = await self._connected(transaction=True)
        if self._session is None:
            self._session = AsyncSession(bind=connection, expire_on_commit=False)
        return self._session

    # --- facts and changes

    async def read(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        """Run a statement; outside a transaction it commits on its own (no BEGIN/COMMIT)."""
        connection = await self._connected(transaction=False)
        return await connection.execute(statement, params)

    async def execute(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        """Run a statement in this unit's transaction (begun by the first one)."""
        self._still_open()
        connection = await self._connected(transaction=True)
        if self._session is not None:
            await self._session.flush()
        return await connection.execute(statement, params)

    def emit(
        self,
        event: Event,
        *,
        correlation_id: str | None = None,
        fill: Mapping[str, str] | None = None,
    ) -> RawEnvelope:
        """Record `event` for publication when this unit commits; with `fill`, some of its
        fields come from the row `apply` changes (`{"balance": "balance_after"}`)."""
        self._still_open()
        envelope = new_envelope(
            event, source=self._source, cause=self.cause, correlation_id=correlation_id
        )
        self._emitted.append(_Emitted(event.routing_key(), envelope, tuple((fill or {}).items())))
        return envelope

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once this unit has committed (never if it does not)."""
        self._still_open()
        self._after_commit.append(callback)

    async def commit_alone(
        self, statement: Executable, params: Mapping[str, Any] | None = None
    ) -> Any:
        """Run a statement that commits on its own, before and apart from this unit's change
        and mark: a row that must exist before an outside call is made (a payment before the
        provider is asked). Only outside a transaction."""
        self._still_open()
        if self._in_transaction:
            raise RuntimeError("commit_alone runs outside the unit's transaction")
        connection = await self._connected(transaction=False)
        return await connection.execute(statement, params)

    async def apply(
        self, change: Change, params: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        """The change, the cause's mark and the events emitted so far as one statement, then
        the commit: the changed row; None if the change matched no row: nothing written, the
        events emitted for it forgotten, the unit still open to decide again. The change must
        return at most one row.

        Build a hot change once, with `bindparam`s, and pass `params`: the statement composed
        around it is then built once as well. Name the parameters apart from the columns the
        change writes (SQLAlchemy would take those for values to set)."""
        self._still_open()
        statement = _composed(
            self._tables,
            change,
            self.cause is not None,
            tuple(emitted.fill for emitted in self._emitted),
        )
        row: Row[Any] | None = (
            await self._write(statement, {**(params or {}), **self._values()})
        ).first()
        if row is None:
            self._emitted = []  # they were for the change that did not happen
            return None
        await self._finish(row)
        return row

    async def commit(self) -> None:
        """Mark the cause handled, write the events, commit; a second call does nothing."""
        if self.committed:
            return
        if self.cause is not None or self._emitted:
            statement = _composed(
                self._tables,
                None,
                self.cause is not None,
                tuple(emitted.fill for emitted in self._emitted),
            )
            await self._write(statement, self._values())
        await self._finish(None)

    async def rollback(self) -> None:
        """Undo what this unit wrote and forget what it emitted; it can be used again."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._end(commit=False)
        self._emitted, self._after_commit = [], []

    # --- transactions and committing

    def _still_open(self) -> None:
        if self.committed:
            raise RuntimeError("this unit of work has committed; its changes and events are sent")

    async def _begin(self) -> None:
        """A transaction on the connection taken autocommitting (reads came first)."""
        if self._in_transaction:
            return
        connection = self.connection
        await connection.rollback()  # SQLAlchemy's view of the statements so far
        await connection.execution_options(isolation_level=connection.default_isolation_level)
        await connection.begin()
        self._in_transaction = self._switched = True

    async def _end(self, *, commit: bool) -> None:
        connection = self._connection
        if connection is None:
            return
        if commit:
            await connection.commit()
        else:
            await connection.rollback()
        if self._switched:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        elif self._taken_in_transaction:  # the next statement picks its connection anew
            if self._session is not None:
                await self._session.close()
                self._session = None
            await connection.close()
            self._connection = None
        self._in_transaction = self._switched = self._taken_in_transaction = False

    def _values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.cause is not None:
            values["uow_cause_id"], values["uow_cause_type"] = self.cause.id, self.cause.type
        for number, emitted in enumerate(self._emitted):
            values[f"uow_event_id_{number}"] = emitted.envelope.id
            values[f"uow_routing_key_{number}"] = emitted.routing_key
            values[f"uow_envelope_{number}"] = emitted.envelope.model_dump_json()
        return values

    async def _write(self, statement: Executable, params: Mapping[str, Any]) -> Any:
        try:
            if self._session is not None:
                await self._session.flush()
            connection = await self._connected(transaction=False)
            return await connection.execute(statement, params)
        except IntegrityError as exc:
            if self.cause is not None and unique_violation(exc, self._tables.inbox.name):
                await self._end(commit=False)
                raise AlreadyHandled(f"{self.cause.type} {self.cause.id}") from exc
            raise

    async def _finish(self, row: Row[Any] | None) -> None:
        if self._session is not None:
            await self._session.flush()
        await self._end(commit=True)
        self.committed = True
        sent = [(emitted.routing_key, _filled(emitted, row)) for emitted in self._emitted]
        self._emitted = []
        if sent:
            self._on_commit(sent)
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the commit stands: a failing callback must not undo the answer
                log.exception("after-commit callback %r failed", callback)


def _autocommitting(engine: AsyncEngine) -> AsyncEngine:
    if engine.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return engine
    return _autocommit_of(engine)


@functools.lru_cache(maxsize=64)
def _autocommit_of(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, each statement committing on its own (one per engine, made once)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@functools.lru_cache(maxsize=512)
def _composed(
    tables: DeliveryTables,
    change: Change | None,
    marks: bool,
    fills: tuple[tuple[tuple[str, str], ...], ...],
) -> Select[Any]:
    """`change` with the cause's mark (`marks`) and one outbox row per event (`fills`: each
    event's fields taken from the changed row), every value a bound parameter: one statement
    per shape, built and compiled once. Without a change, the mark and the rows alone (a mark
    taken already fails the statement as a whole)."""
    anchor = change.cte("changed") if change is not None else None
    ctes: list[CTE] = []
    if marks:
        cause = (
            bindparam("uow_cause_id", type_=Uuid()),
            bindparam("uow_cause_type", type_=String()),
        )
        if anchor is None:
            mark = insert(tables.inbox).values(event_id=cause[0], event_type=cause[1])
        else:
            mark = insert(tables.inbox).from_select(
                ["event_id", "event_type"], select(*cause).select_from(anchor).limit(1)
            )
        ctes.append(mark.cte("claimed"))
    rows = []
    for number, fill in enumerate(fills):
        document: ColumnElement[Any] = cast(
            bindparam(f"uow_envelope_{number}", type_=String()), JSONB
        )
        for name, column in fill:
            if anchor is None:
                raise ValueError("only a unit that applies a change can fill events from it")
            document = func.jsonb_set(
                document, literal(["data", name], ARRAY(Text())), func.to_jsonb(anchor.c[column])
            )
        values = select(
            bindparam(f"uow_event_id_{number}", type_=Uuid()),
            bindparam(f"uow_routing_key_{number}", type_=String()),
            document,
        )
        rows.append(values if anchor is None else values.select_from(anchor).limit(1))
    if rows:  # one INSERT, so the rows keep the order they were emitted in
        ctes.append(
            insert(tables.outbox)
            .from_select(["id", "routing_key", "envelope"], union_all(*rows))
            .cte("sent")
        )
    statement = select(*anchor.c) if anchor is not None else select(literal_column("1"))
    for cte in ctes:
        statement = statement.add_cte(cte)
    return statement


def _filled(emitted: _Emitted, row: Row[Any] | None) -> RawEnvelope:
    if not emitted.fill or row is None:
        return emitted.envelope
    data = {**emitted.envelope.data}
    values = row._mapping
    for name, column in emitted.fill:
        data[name] = values[column]
    return emitted.envelope.model_copy(update={"data": data})
