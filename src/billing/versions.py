"""Billing's events that carry a balance go out in two versions: v2, the balance exact (a
decimal string), and beside it v1, in whole credits, for subscribers that do not know v2 yet
(docs/subscribing.md §4). Both go into the outbox in the one unit of work, v2 first."""

from __future__ import annotations

from collections.abc import Mapping

from contracts.events import (
    BalanceDebited,
    BalanceRefunded,
    CreditsAdjusted,
    CreditsAdjustmentRefused,
    CreditsGranted,
    DebitRejected,
    PaymentSucceeded,
    WeeklyBonusGranted,
)
from messaging.unit_of_work import UnitOfWork

WithBalance = (
    BalanceDebited
    | DebitRejected
    | BalanceRefunded
    | PaymentSucceeded
    | WeeklyBonusGranted
    | CreditsGranted
    | CreditsAdjusted
    | CreditsAdjustmentRefused
)
AMOUNTS = frozenset({"balance", "shortfall"})
"""The fields whose unit changed in v2: filled from `accounts.versions`' columns."""


def emit(
    uow: UnitOfWork,
    event: WithBalance,
    *,
    fill: Mapping[str, str] | None = None,
    correlation_id: str | None = None,
) -> None:
    """`uow.emit` of `event` (v2) and of its v1 copy; `fill` names a changed row's columns as
    `uow.emit` takes them, an amount's by the column `accounts.versions` was given."""
    uow.emit(event, fill=_columns(fill, "exact"), correlation_id=correlation_id)
    uow.emit(event.v1(), fill=_columns(fill, "whole"), correlation_id=correlation_id)


def _columns(fill: Mapping[str, str] | None, version: str) -> dict[str, str] | None:
    if fill is None:
        return None
    return {
        name: f"{column}_{version}" if name in AMOUNTS else column for name, column in fill.items()
    }
