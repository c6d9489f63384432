"""Tables the backend API owns: its operators and their sessions, the audit log of operators'
actions, and its delivery tables.

It owns nothing else: users, balances, payments and jobs stay with their services, which it
asks (request/reply) and commands (events through its outbox).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
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
    """awaiting_approval (held, not sent) or rejected; pending (sent), applied or refused (the
    owner's answer)."""
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    command: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    """While awaiting approval: the command to send once approved ({type, version, data})."""
    approver: Mapped[str | None] = mapped_column(String(100), nullable=True)
    """The second operator who approved or rejected it."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_backend_audit_log_created_at", "created_at"),
        Index("ix_backend_audit_log_operator_created_at", "operator", "created_at"),
        Index("ix_backend_audit_log_target", "target"),
        Index(
            "ix_backend_audit_log_awaiting",
            "id",
            postgresql_where=text("status = 'awaiting_approval'"),
        ),
    )


class OperatorAccount(Base):
    """One operator: their login, password hash (scrypt), role and, for admins, TOTP secret."""

    __tablename__ = "backend_operators"

    login: Mapped[str] = mapped_column(String(100), primary_key=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(10))
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Base32; set for every admin (their second factor)."""
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The time step of the last code accepted: a code of that step or older is a replay."""
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("role IN ('viewer', 'support', 'admin')", name="role"),)


class OperatorSession(Base):
    """A signed-in session (the panel's cookie or an API token): valid until it expires or is
    revoked; only the token's SHA-256 is kept."""

    __tablename__ = "backend_sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    operator: Mapped[str] = mapped_column(
        String(100), ForeignKey("backend_operators.login", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(10))
    """panel (a cookie) or api (a bearer token)"""
    address: Mapped[str] = mapped_column(String(100))
    user_agent: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_backend_sessions_operator_created_at", "operator", "created_at"),
        Index("ix_backend_sessions_created_at", "created_at"),
    )


class SignInFailure(Base):
    """One failed sign-in, counted against its login and its client address (`key` is
    `login:<name>` or `address:<ip>`); rows older than the throttle's window are deleted."""

    __tablename__ = "backend_sign_in_failures"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_backend_sign_in_failures_key_failed_at", "key", "failed_at"),
        Index("ix_backend_sign_in_failures_failed_at", "failed_at"),
    )


class RunnerBeat(Base):
    """The backend API's projection of the GPU runners: each runner's last heartbeat
    (`RunnerHeartbeat`), kept as it came; a runner is gone once its beats stop."""

    __tablename__ = "backend_runners"

    runner_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    workflows: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    device: Mapped[str] = mapped_column(String(50))
    memory_used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    current_job: Mapped[int | None] = mapped_column(Integer, nullable=True)
    healthy: Mapped[bool] = mapped_column(Boolean)
    problem: Mapped[str | None] = mapped_column(Text, nullable=True)
    stopping: Mapped[bool] = mapped_column(Boolean)
    interval_s: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    beat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the runner sent its latest beat (the envelope's time)."""


DELIVERY = delivery_tables("backend_api", metadata)
