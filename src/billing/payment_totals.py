"""The payments page's totals: how many payments match the operator's filters, and how much per
currency, exactly, without counting a million rows on every page view.

`payment_totals` (migration 0024) holds the count and sum per day (UTC), currency, status, type
and method, kept equal to `payments` by its triggers in the writer's own transaction. A filter
of those columns (dates at midnight UTC, as the panel sends them) adds up its rows; any other
filter (a user, a top-up's refunds, a moment within a day) is selective enough to aggregate the
payments themselves, by their indexes.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from billing.models import PAYMENT_TOTALS, PaymentStatus, PaymentType
from contracts.rpc import ListPayments

Sums = list[tuple[str | None, int, int]]
"""(currency, payments, amount) per currency, in currency order."""


def _midnight(moment: datetime | None) -> bool:
    return moment is None or moment.astimezone(UTC).timetz() == time(0, tzinfo=UTC)


def kept(request: ListPayments) -> bool:
    """Whether the totals table answers these filters."""
    return (
        request.user_id is None
        and request.payment_id is None
        and request.refund_of is None
        and _midnight(request.created_from)
        and _midnight(request.created_until)
    )


async def per_currency(session: AsyncSession, request: ListPayments, matching: Select[Any]) -> Sums:
    """The count and sum per currency of every payment `matching` selects (built from
    `request`'s filters)."""
    if not kept(request):
        rows = matching.subquery()
        query = (
            select(rows.c.currency, func.count(), func.coalesce(func.sum(rows.c.amount), 0))
            .group_by(rows.c.currency)
            .order_by(rows.c.currency)
        )
        return [(c, int(n), int(a)) for c, n, a in (await session.execute(query)).all()]
    totals = PAYMENT_TOTALS.c
    conditions: list[ColumnElement[bool]] = []
    if request.status is not None:
        conditions.append(totals.status == PaymentStatus(request.status))
    if request.payment_type is not None:
        conditions.append(totals.payment_type == PaymentType(request.payment_type))
    if request.currency is not None:
        conditions.append(totals.currency == request.currency)
    if request.payment_method is not None:
        conditions.append(totals.payment_method == request.payment_method)
    if request.created_from is not None:
        conditions.append(totals.day >= request.created_from.astimezone(UTC).date())
    if request.created_until is not None:
        conditions.append(totals.day < request.created_until.astimezone(UTC).date())
    query = (
        select(totals.currency, func.sum(totals.payments), func.sum(totals.amount))
        .where(*conditions)
        .group_by(totals.currency)
        .having(func.sum(totals.payments) > 0)
        .order_by(totals.currency)
    )
    return [(c, int(n), int(a)) for c, n, a in (await session.execute(query)).all()]
