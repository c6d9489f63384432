"""Tables the backend API owns: the audit log of operators' actions and its delivery tables.

It owns nothing else: users, balances, payments and jobs stay with their services, which it
asks (request/reply) and commands (events through its outbox).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Identity, Index, String, Text, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from messaging.database import metadata
from messaging.tables import delivery_tables


class Base(DeclarativeBase):
    metadata = metadata


class AuditEntry(Base):
    """One operator action: who, what, on whom, why, and what its owner answered."""

    __tablename__ = "backend_audit_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    """The command's idempotency key (its request id at the owner)."""
    operator: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    """pending (sent), applied or refused (the owner's answer)."""
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_backend_audit_log_created_at", "created_at"),
        Index("ix_backend_audit_log_operator_created_at", "operator", "created_at"),
        Index("ix_backend_audit_log_target", "target"),
    )


DELIVERY = delivery_tables("backend_api", metadata)
