"""The `payments` and `payment_logs` rows in SQL. Repositories never commit."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.domain import LocalPayment

_COLUMNS = """p.id, p.user_id, p.amount, p.currency, p.status::text, p.yukassa_payment_id,
              p.credits, u.telegram_id, p.request_id"""


def _local(row: Any) -> LocalPayment:
    return LocalPayment(
        id=int(row[0]),
        user_id=int(row[1]),
        amount_kopecks=int(row[2]),
        currency=str(row[3]),
        status=str(row[4]),
        yookassa_id=row[5],
        credits=row[6],
        telegram_id=row[7],
    )


async def open_topup(
    session: AsyncSession,
    *,
    request_id: uuid.UUID,
    user_id: int,
    amount_kopecks: int,
    credits: int,
    currency: str,
    description: str,
) -> LocalPayment:
    """The pending payment of a top-up request: created once, found again on every retry."""
    await session.execute(
        text(
            """
            INSERT INTO payments (user_id, amount, currency, status, payment_type, payment_method,
                                  description, request_id, credits)
            VALUES (:user_id, :amount, :currency, 'pending', 'payment', 'card',
                    :description, :request_id, :credits)
            ON CONFLICT (request_id) DO NOTHING
            """
        ),
        {
            "user_id": user_id,
            "amount": amount_kopecks,
            "currency": currency,
            "description": description,
            "request_id": request_id,
            "credits": credits,
        },
    )
    row = (
        await session.execute(
            text(
                f"SELECT {_COLUMNS} FROM payments p JOIN users u ON u.user_id = p.user_id "
                "WHERE p.request_id = :r"
            ),
            {"r": request_id},
        )
    ).one()
    return _local(row)


async def attach_yookassa(
    session: AsyncSession, payment_id: int, yookassa_id: str, confirmation_url: str
) -> bool:
    """Record the YooKassa payment of our row; False when another attempt already did."""
    row = (
        await session.execute(
            text(
                """
                UPDATE payments SET yukassa_payment_id = :y, confirmation_url = :url,
                                    updated_at = now()
                WHERE id = :id AND yukassa_payment_id IS NULL AND status = 'pending'
                RETURNING id
                """
            ),
            {"id": payment_id, "y": yookassa_id, "url": confirmation_url},
        )
    ).first()
    return row is not None


async def by_yookassa_id(session: AsyncSession, yookassa_id: str) -> LocalPayment | None:
    row = (
        await session.execute(
            text(
                f"SELECT {_COLUMNS} FROM payments p JOIN users u ON u.user_id = p.user_id "
                "WHERE p.yukassa_payment_id = :y AND p.payment_type = 'payment'"
            ),
            {"y": yookassa_id},
        )
    ).first()
    return None if row is None else _local(row)


async def pending_older_than(
    session: AsyncSession, age_s: float, limit: int
) -> list[tuple[LocalPayment, uuid.UUID | None, float]]:
    """Our top-ups still pending after `age_s`: (row, request id, age in seconds).

    Least recently checked first (`mark_checked` moves a row it could not settle to the back),
    so rows that stay unresolvable never starve newer ones. Rows without a `request_id` were
    not opened by us (the customer's older history) and are left to an operator.
    """
    rows = await session.execute(
        text(
            f"""
            SELECT {_COLUMNS}, extract(epoch FROM now() - p.created_at)
            FROM payments p JOIN users u ON u.user_id = p.user_id
            WHERE p.status = 'pending' AND p.payment_type = 'payment'
              AND p.request_id IS NOT NULL
              AND p.created_at < now() - make_interval(secs => :age)
            ORDER BY p.updated_at NULLS FIRST, p.id LIMIT :limit
            """
        ),
        {"age": age_s, "limit": limit},
    )
    return [(_local(row), row[8], float(row[9])) for row in rows]


async def transition(
    session: AsyncSession,
    payment_id: int,
    to: str,
    *,
    method_type: str | None = None,
    method_details: dict[str, Any] | None = None,
    unbound_only: bool = False,
) -> bool:
    """pending -> `to`, at most once: False when the row was no longer pending.

    `unbound_only`: only while no YooKassa payment is attached (a creation that may still be
    finishing must not be closed under the user's feet).
    """
    paid = to == "succeeded"
    row = (
        await session.execute(
            text(
                """
                UPDATE payments SET status = CAST(:to AS paymentstatus), updated_at = now(),
                    paid_at = CASE WHEN :paid THEN now() ELSE paid_at END,
                    payment_method = COALESCE(:method, payment_method),
                    payment_method_details = COALESCE(:details, payment_method_details)
                WHERE id = :id AND status = 'pending'
                  AND (NOT :unbound OR yukassa_payment_id IS NULL)
                RETURNING id
                """
            ),
            {
                "id": payment_id,
                "to": to,
                "paid": paid,
                "unbound": unbound_only,
                "method": (method_type or "")[:50] or None,
                "details": json.dumps(method_details, ensure_ascii=False)
                if method_details
                else None,
            },
        )
    ).first()
    return row is not None


async def record_credit(
    session: AsyncSession,
    *,
    user_id: int,
    kind: str,
    amount_kopecks: int,
    description: str,
) -> int:
    """A settled `payments` row of a refund or weekly bonus; returns its id."""
    return int(
        (
            await session.execute(
                text(
                    """
                    INSERT INTO payments (user_id, amount, currency, status, payment_type,
                                          payment_method, description, paid_at)
                    VALUES (:user_id, :amount, 'RUB', 'succeeded', CAST(:kind AS paymenttype),
                            'internal', :description, now())
                    RETURNING id
                    """
                ),
                {
                    "user_id": user_id,
                    "amount": amount_kopecks,
                    "kind": kind,
                    "description": description,
                },
            )
        ).scalar_one()
    )


async def log_legacy(
    session: AsyncSession, *, user_id: int, rubles: float, status: str, yookassa_id: str
) -> None:
    """The customer's old `payment_logs`, kept in step for their tools."""
    await session.execute(
        text(
            "INSERT INTO payment_logs (user_id, amount, status, payment_id) VALUES (:u, :a, :s, :p)"
        ),
        {"u": user_id, "a": rubles, "s": status, "p": yookassa_id},
    )


async def mark_checked(session: AsyncSession, payment_id: int) -> None:
    """Reconciliation looked at this pending row and could not settle it yet."""
    await session.execute(
        text("UPDATE payments SET updated_at = now() WHERE id = :id AND status = 'pending'"),
        {"id": payment_id},
    )
