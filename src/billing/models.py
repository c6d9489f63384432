"""Tables billing owns: the customer's `users`, `payments`, `payment_logs`, and its delivery tables.

Column names, types, lengths and defaults follow the customer's schema exactly
(`users.telegram_id` widened to BIGINT: Telegram ids exceed 32 bits).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Enum, Float, ForeignKey, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from messaging.database import metadata
from messaging.tables import delivery_tables


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

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)
    username: Mapped[str | None] = mapped_column(String(100), index=True)
    balance: Mapped[float | None] = mapped_column(Float, default=60.0)
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


DELIVERY = delivery_tables("billing", metadata)
