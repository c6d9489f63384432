"""The one unit of work on the real database: a guarded change, its mark and its events as one
statement; several statements in one transaction; duplicates; after-commit callbacks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, insert, select, text, update
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.envelope import RawEnvelope, new_envelope
from contracts.events import BalanceDebited, JobProgress
from jobs.models import DELIVERY
from messaging.unit_of_work import AlreadyHandled, Committed, UnitOfWork, _composed

pytestmark = pytest.mark.integration

ACCOUNTS = Table(
    "uow_probe_accounts",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("balance", Integer, nullable=False),
)


@pytest.fixture
async def clean(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(ACCOUNTS.metadata.create_all)
        await connection.execute(text("TRUNCATE uow_probe_accounts, jobs_outbox, jobs_inbox"))
        await connection.execute(insert(ACCOUNTS).values(id=1, balance=10))


def cause() -> RawEnvelope:
    return new_envelope(JobProgress(job_id=1, attempt=1, step=1, total_steps=2), source="test")


def debit(amount: int) -> object:
    return (
        update(ACCOUNTS)
        .where(ACCOUNTS.c.id == 1, ACCOUNTS.c.balance >= amount)
        .values(balance=ACCOUNTS.c.balance - amount)
        .returning(ACCOUNTS.c.balance)
    )


class Handed:
    def __init__(self) -> None:
        self.rows: list[Committed] = []

    def __call__(self, rows: Sequence[Committed]) -> None:
        self.rows.extend(rows)


def unit(
    engine: AsyncEngine, handed: Callable[[Sequence[Committed]], None], **kw: object
) -> UnitOfWork:
    return UnitOfWork(engine, DELIVERY, source="test", on_commit=handed, **kw)  # type: ignore[arg-type]


async def scalar(engine: AsyncEngine, sql: str) -> object:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql))).scalar()


async def test_apply_writes_change_mark_and_filled_event_in_one_statement(
    clean: None, engine: AsyncEngine
) -> None:
    handed, message = Handed(), cause()
    called: list[str] = []
    async with unit(engine, handed, cause=message) as uow:
        uow.emit(
            BalanceDebited(job_id=7, user_id=1, amount=4, balance=0), fill={"balance": "balance"}
        )
        uow.after_commit(lambda: called.append("done"))
        row = await uow.apply(debit(4))  # type: ignore[arg-type]
        assert not uow.connection.in_transaction()  # it committed on its own
    assert row is not None
    assert row.balance == 6
    assert called == ["done"]
    assert await scalar(engine, "SELECT balance FROM uow_probe_accounts") == 6
    assert (
        await scalar(engine, f"SELECT count(*) FROM jobs_inbox WHERE event_id = '{message.id}'")
        == 1
    )
    stored = await scalar(engine, "SELECT envelope -> 'data' ->> 'balance' FROM jobs_outbox")
    assert stored == "6"
    [(routing_key, envelope)] = handed.rows
    assert routing_key == "balance.debited"
    assert envelope.data["balance"] == 6
    assert envelope.causation_id == message.id


async def test_a_guard_that_misses_writes_nothing_and_leaves_the_unit_open(
    clean: None, engine: AsyncEngine
) -> None:
    handed, message = Handed(), cause()
    async with unit(engine, handed, cause=message) as uow:
        uow.emit(BalanceDebited(job_id=7, user_id=1, amount=40, balance=0))
        assert await uow.apply(debit(40)) is None  # type: ignore[arg-type]
        assert await scalar(engine, "SELECT count(*) FROM jobs_inbox") == 0
        assert await scalar(engine, "SELECT count(*) FROM jobs_outbox") == 0
        # the use case reads again and decides again: here, a smaller debit, and its event
        uow.emit(BalanceDebited(job_id=7, user_id=1, amount=3, balance=0))
        assert await uow.apply(debit(3)) is not None  # type: ignore[arg-type]
    [(_, sent)] = handed.rows  # only the event of the change that happened
    assert sent.data["amount"] == 3
    assert await scalar(engine, "SELECT balance FROM uow_probe_accounts") == 7


async def test_a_message_handled_already_changes_nothing(clean: None, engine: AsyncEngine) -> None:
    handed, message = Handed(), cause()
    async with unit(engine, handed, cause=message) as uow:
        await uow.apply(debit(1))  # type: ignore[arg-type]
    called: list[str] = []
    for attempt in ("one statement", "transaction", "nothing to change"):
        with pytest.raises(AlreadyHandled):
            await _handle_again(engine, handed, message, attempt, called)
    assert await scalar(engine, "SELECT balance FROM uow_probe_accounts") == 9
    assert await scalar(engine, "SELECT count(*) FROM jobs_outbox") == 0
    assert len(handed.rows) == 0
    assert called == []


async def _handle_again(
    engine: AsyncEngine, handed: Handed, message: RawEnvelope, attempt: str, called: list[str]
) -> None:
    async with unit(engine, handed, cause=message) as uow:
        uow.emit(JobProgress(job_id=1, attempt=1, step=2, total_steps=2))
        uow.after_commit(lambda: called.append(attempt))
        if attempt == "one statement":
            await uow.apply(debit(1))  # type: ignore[arg-type]
        elif attempt == "transaction":
            await uow.execute(debit(1))  # type: ignore[arg-type]
            await uow.commit()
        else:
            await uow.commit()


async def test_several_statements_commit_together_or_not_at_all(
    clean: None, engine: AsyncEngine
) -> None:
    handed = Handed()
    async with unit(engine, handed, cause=cause()) as uow:
        await uow.execute(debit(2))  # type: ignore[arg-type]
        uow.emit(JobProgress(job_id=1, attempt=1, step=2, total_steps=2))
        # leaves without commit: rolled back
    assert await scalar(engine, "SELECT balance FROM uow_probe_accounts") == 10
    async with unit(engine, handed, cause=cause()) as uow:
        seen = (await uow.read(select(ACCOUNTS.c.balance))).scalar_one()
        await uow.execute(debit(seen - 1))  # type: ignore[arg-type]
        row = await uow.apply(debit(1))  # type: ignore[arg-type]
        assert row is not None
        assert row.balance == 0
    assert await scalar(engine, "SELECT balance FROM uow_probe_accounts") == 0
    assert await scalar(engine, "SELECT count(*) FROM jobs_inbox") == 1
    assert len(handed.rows) == 0  # nothing was emitted


async def test_a_unit_without_a_cause_marks_nothing(clean: None, engine: AsyncEngine) -> None:
    handed = Handed()
    async with unit(engine, handed) as uow:
        uow.emit(JobProgress(job_id=1, attempt=1, step=2, total_steps=2))
        await uow.commit()
    assert await scalar(engine, "SELECT count(*) FROM jobs_inbox") == 0
    assert await scalar(engine, "SELECT count(*) FROM jobs_outbox") == 1
    assert len(handed.rows) == 1


async def test_nothing_is_emitted_or_applied_after_the_commit(
    clean: None, engine: AsyncEngine
) -> None:
    handed = Handed()
    async with unit(engine, handed, cause=cause()) as uow:
        await uow.apply(debit(1))  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="has committed"):
            uow.emit(JobProgress(job_id=1, attempt=1, step=2, total_steps=2))
        with pytest.raises(RuntimeError, match="has committed"):
            await uow.apply(debit(1))  # type: ignore[arg-type]
    assert await scalar(engine, "SELECT balance FROM uow_probe_accounts") == 9


async def test_on_an_autocommitting_engine_apply_is_one_round_trip_and_built_once(
    clean: None, engine: AsyncEngine
) -> None:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    change = (
        update(ACCOUNTS)
        .where(ACCOUNTS.c.id == bindparam("account"), ACCOUNTS.c.balance >= bindparam("amount"))
        .values(balance=ACCOUNTS.c.balance - bindparam("amount"))
        .returning(ACCOUNTS.c.balance)
    )
    sqlalchemy_events.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        for _ in range(2):
            async with unit(autocommit, Handed(), cause=cause()) as uow:
                uow.emit(JobProgress(job_id=1, attempt=1, step=2, total_steps=2))
                assert await uow.apply(change, {"account": 1, "amount": 1}) is not None
    finally:
        sqlalchemy_events.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert len(statements) == 2  # no BEGIN, no COMMIT: one statement per unit
    assert statements[0] == statements[1]
    assert "jobs_inbox" in statements[0]
    assert "jobs_outbox" in statements[0]
    assert _composed.cache_info().hits >= 1  # the second unit reused the composed statement


async def test_whatever_the_engine_a_unit_autocommits_outside_a_transaction(
    clean: None, engine: AsyncEngine
) -> None:
    """A row written alone (before an outside call) is committed at once, not held in an open
    transaction until the unit ends; a guarded change that misses forgets its events."""
    handed = Handed()
    async with unit(engine, handed, cause=cause()) as uow:
        await uow.commit_alone(insert(ACCOUNTS).values(id=2, balance=0))
        assert await scalar(engine, "SELECT count(*) FROM uow_probe_accounts WHERE id = 2") == 1
        uow.emit(JobProgress(job_id=1, attempt=1, step=2, total_steps=2))
        assert await uow.apply(debit(1000)) is None  # type: ignore[arg-type]
        await uow.commit()  # the decision of nothing: the mark alone
    assert handed.rows == []
    assert await scalar(engine, "SELECT count(*) FROM jobs_outbox") == 0
    assert await scalar(engine, "SELECT count(*) FROM jobs_inbox") == 1


async def test_a_failing_after_commit_callback_does_not_undo_the_answer(
    clean: None, engine: AsyncEngine
) -> None:
    def fail() -> None:
        raise ValueError("the sender is away")

    async with unit(engine, Handed(), cause=cause()) as uow:
        uow.after_commit(fail)
        assert await uow.apply(debit(1)) is not None  # type: ignore[arg-type]
    assert await scalar(engine, "SELECT balance FROM uow_probe_accounts WHERE id = 1") == 9


async def test_after_a_rollback_a_transaction_first_unit_autocommits_again(
    clean: None, engine: AsyncEngine
) -> None:
    """A unit whose first statement needed a transaction, rolled back (a refused request),
    runs its next statements as if new: a row written alone is committed at once."""
    async with unit(engine, Handed(), cause=cause()) as uow:
        await uow.execute(debit(5))  # type: ignore[arg-type]
        await uow.rollback()
        balance = (await uow.read(select(ACCOUNTS.c.balance))).scalar_one()
        assert balance == 10  # the debit was undone
        await uow.commit_alone(insert(ACCOUNTS).values(id=3, balance=0))
        assert await scalar(engine, "SELECT count(*) FROM uow_probe_accounts WHERE id = 3") == 1
        await uow.commit()
    assert await scalar(engine, "SELECT count(*) FROM jobs_inbox") == 1
