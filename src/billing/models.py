"""Tables billing owns: the customer's `users`, `payments`, `payment_logs`, the ledger, and its
delivery tables.

Column names, types, lengths and defaults of the customer's tables follow their schema exactly,
but for two widenings: `users.telegram_id` to BIGINT (Telegram ids exceed 32 bits) and
`users.balance` from double precision to NUMERIC(19, 6) (0018: an adopted fractional balance
is carried, debited and topped up exactly). Billing only adds a `CHECK (balance >= 0)` on
`users` and nullable columns on `payments`: `request_id` and `credits` make top-ups
idempotent; `income_amount`, `refund_of`, `receipt_contact` (0013).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts.events import CREDIT_DIGITS, CREDIT_SCALE
from messaging.database import metadata
from messaging.tables import delivery_tables

CREDITS = Numeric(CREDIT_DIGITS, CREDIT_SCALE)
"""Balances and ledger amounts: exact to a millionth of a credit (0018), so an adopted
account's fractional balance is carried, debited and topped up exactly."""


class Base(DeclarativeBase):
    metadata = metadata


class PaymentStatus(enum.Enum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"  # YooKassa says "canceled"; mapped at the boundary


class PaymentType(enum.Enum):
    payment = "payment"
    weekly_bonus = "weekly_bonus"
    refund = "refund"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_non_negative"),)

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)
    username: Mapped[str | None] = mapped_column(String(100), index=True)
    balance: Mapped[Decimal | None] = mapped_column(CREDITS, default=Decimal(60))
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.user_id"))
    yukassa_payment_id: Mapped[str | None] = mapped_column(String(100), unique=True, index=True)
    amount: Mapped[int | None] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3), default="RUB")
    status: Mapped[PaymentStatus | None] = mapped_column(
        Enum(PaymentStatus), default=PaymentStatus.pending
    )
    payment_type: Mapped[PaymentType | None] = mapped_column(
        Enum(PaymentType), default=PaymentType.payment
    )
    payment_method: Mapped[str | None] = mapped_column(String(50), default="card")
    payment_method_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    confirmation_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Billing's additions: the TopUpRequested a payment answers (one payment per request) and
    # the credits it buys, fixed when it was created.
    request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True, nullable=True)
    credits: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # What YooKassa left the shop after its fee (kopecks); the top-up a refund gives money
    # back for; the email or phone the buyer's 54-FZ receipts go to.
    income_amount: Mapped[int | None] = mapped_column(Integer, nullable=True)
    refund_of: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    receipt_contact: Mapped[str | None] = mapped_column(String(320), nullable=True)


class PaymentLog(Base):
    """Legacy history of top-ups, kept in step with `payments` for the customer's old tools."""

    __tablename__ = "payment_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.user_id"))
    amount: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str | None] = mapped_column(String(50), default="pending")
    payment_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class LedgerEntry(Base):
    """Append-only: every balance change, once per idempotency key; balance = sum(amount)."""

    __tablename__ = "billing_ledger"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("users.user_id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(CREDITS)
    balance_after: Mapped[Decimal] = mapped_column(CREDITS)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    payment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FarmingFlag(Base):
    """An account the gateway saw uploading the same picture as many other accounts: while it
    never paid, it gets no weekly bonus (farming.py)."""

    __tablename__ = "billing_farming_flags"

    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    shared_upload_accounts: Mapped[int] = mapped_column(Integer, nullable=False)
    """How many accounts had uploaded that picture when it was last reported."""
    flagged_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


PAYMENT_TOTALS = Table(
    "payment_totals",
    metadata,
    Column("day", Date),
    Column("currency", String(3)),
    Column("status", Enum(PaymentStatus)),
    Column("payment_type", Enum(PaymentType)),
    Column("payment_method", String(50)),
    Column("payments", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Index(
        "ux_payment_totals_group",
        "day",
        "currency",
        "status",
        "payment_type",
        "payment_method",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
)
"""How many payments and how much, per day (UTC), currency, status, type and method: kept equal
to `payments` by its triggers (migration 0024); the payments page's totals add these up."""

# The operators' lists on a big shop (migration 0024).
Index(
    "ix_users_username_lower_prefix",
    func.lower(User.username),
    postgresql_ops={"lower_1": "text_pattern_ops"},
)
Index("ix_payments_user_id_id", Payment.user_id, Payment.id)
Index("ix_payments_status_id", Payment.status, Payment.id)
Index("ix_payments_created_at", Payment.created_at)


DELIVERY = delivery_tables("billing", metadata)
