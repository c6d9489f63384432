"""Billing's hot statements are built once per shape and compile with their values bound."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.sql import ClauseElement

from billing import accounts
from billing.accounts import Credit
from billing.domain import LedgerKind, debit_key, refund_key
from billing.models import PaymentType

DIALECT = asyncpg.dialect()  # type: ignore[no-untyped-call]


def _compiles(statement: ClauseElement, params: dict[str, Any]) -> None:
    """Every value is a named parameter of the statement, and nothing is read as a column's
    value (a parameter named like a written column would be)."""
    compiled = statement.compile(dialect=DIALECT, column_keys=list(params))  # as executed
    assert set(params) <= set(compiled.binds), set(params) - set(compiled.binds)
    assert all(name.startswith(("move_", "credit_", "open_")) for name in params)


def _debit(job_id: int, price: int, user_id: int) -> tuple[Any, dict[str, Any]]:
    return accounts.move(
        -price, debit_key(job_id), LedgerKind.debit, user_id=user_id, job_id=job_id
    )


def test_a_debit_is_one_statement_built_once_and_run_with_its_values() -> None:
    first, first_params = _debit(1, 10, 7)
    second, second_params = _debit(2, 12, 8)
    assert first is second
    assert (first_params["move_amount"], second_params["move_amount"]) == (-10, -12)
    assert second_params["move_key"] == "debit:job:2"
    _compiles(first, first_params)


@pytest.mark.parametrize(
    "build",
    [
        lambda n: accounts.move(
            5 * n,
            refund_key(n),
            LedgerKind.refund,
            user_id=n,
            job_id=n,
            credit=Credit(PaymentType.refund, amount_kopecks=500 * n, description=f"refund {n}"),
        ),
        lambda n: accounts.move(0, debit_key(n), LedgerKind.debit, user_id=n, reason=f"x{n}"),
        lambda n: accounts.move(n, f"adjustment:{n}", LedgerKind.adjustment, telegram_id=n),
        lambda n: accounts.refusal(n, 10 * n, debit_key(n), job_id=n, reason="refused"),
        lambda n: accounts.open_account(n, f"user{n}", 60),
        lambda n: accounts.open_account(n, None, 0),
    ],
    ids=["refund", "close", "adjustment", "refusal", "open", "open-without-welcome"],
)
def test_the_other_hot_statements_are_built_once(build: Any) -> None:
    (first, params), (second, _) = build(1), build(2)
    assert first is second
    _compiles(first, params)


def test_a_move_with_a_condition_of_its_own_is_built_for_it() -> None:
    statement, params = accounts.move(
        3, "topup:x", LedgerKind.topup, user_id=1, only_if=accounts.can_move()
    )
    assert statement is not _debit(1, 3, 1)[0]
    _compiles(statement, params)
