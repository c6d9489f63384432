"""Tables the gateway owns: who its users are, its view of their jobs and credits, the Telegram
messages it still has to deliver, FSM conversations, and its outbox and inbox."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts.events import CREDIT_DIGITS, CREDIT_SCALE
from messaging.database import metadata
from messaging.tables import delivery_tables


class Base(DeclarativeBase):
    metadata = metadata


class GatewayUser(Base):
    """A Telegram user the bot has talked to, with billing's account id and their language."""

    __tablename__ = "gateway_users"

    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    language: Mapped[str] = mapped_column(String(10), nullable=False, server_default="ru")
    username: Mapped[str | None] = mapped_column(String(100))
    blocked: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    """Telegram said the user blocked the bot: broadcasts skip them."""
    chosen_language: Mapped[str | None] = mapped_column(String(10))
    """The language picked in the menu (then also `language`); None: Telegram's decides."""
    source: Mapped[str | None] = mapped_column(String(64), index=True)
    """The first /start deep-link payload the user came with: a campaign or a referral."""
    source_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    active_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    """When the user joined or last asked for an image (0027): who is "active" within a period,
    for the dashboard and a broadcast's audience, is one indexed range of it."""


class GatewayJob(Base):
    """The gateway's view of one request: where its status message is, how far it got."""

    __tablename__ = "gateway_jobs"

    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)
    chat_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    language: Mapped[str] = mapped_column(String(10), nullable=False)
    preset_id: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    prompt: Mapped[str | None] = mapped_column(Text)
    image_key: Mapped[str | None] = mapped_column(String(255))
    """The (first) photo it edits ..."""
    extra_image_keys: Mapped[list[str] | None] = mapped_column(ARRAY(String(255)))
    """... and an album's second and third (0014)."""
    phase: Mapped[str] = mapped_column(String(20), nullable=False)
    price: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    """The runner's attempt the progress belongs to; a retry starts counting steps again."""
    step: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    total_steps: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    status_message_id: Mapped[int | None] = mapped_column(BigInteger)
    result_key: Mapped[str | None] = mapped_column(String(255))
    """The paid result in the object store, kept for the retention period: sent again on
    request (from /history, or as a file in original quality)."""
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (Index("ix_gateway_jobs_telegram_id_phase", "telegram_id", "phase"),)


class GatewayCredit(Base):
    """Credits that reached a user (top-ups, bonuses, refunds), as billing announced them."""

    __tablename__ = "gateway_credits"

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    credits: Mapped[int] = mapped_column(Integer, nullable=False)
    balance: Mapped[Decimal] = mapped_column(Numeric(CREDIT_DIGITS, CREDIT_SCALE), nullable=False)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ReceiptContact(Base):
    """Where a user's 54-FZ receipts go: the email or phone (digits, country code first) they
    gave when the shop sends receipts; they can change it, /deletemydata erases it."""

    __tablename__ = "gateway_receipt_contacts"

    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    contact: Mapped[str] = mapped_column(String(254), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class OutboundMessage(Base):
    """A Telegram call still to make: the sender delivers it and marks it sent.

    `key` deduplicates (a second JobSucceeded never sends a second photo) and coalesces (a job's
    status edits share one row; a newer text replaces one not yet sent and bumps `version`).
    """

    __tablename__ = "gateway_outbound"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    lane: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="1")
    """`Lane.jobs` (status edits, results, notifications) or `Lane.bulk` (broadcasts): the
    sender claims lower lanes first (see `limits.Lane`)."""
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    not_before: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        Index(
            "ix_gateway_outbound_pending",
            "not_before",
            postgresql_where=text("sent_at IS NULL"),
        ),
        Index(  # the sender's claim walks the unsent rows by lane, then id (0011)
            "ix_gateway_outbound_pending_lane",
            "lane",
            "id",
            postgresql_where=text("sent_at IS NULL"),
        ),
    )


class FsmRecord(Base):
    """aiogram's conversation state and data, so a dialogue survives a restart."""

    __tablename__ = "gateway_fsm"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ModerationDecision(Base):
    """The moderation's audit log: every refusal (prompt, photo, result) with its verdict and
    scores, and every restriction (slowed, suspended, banned, lifted) with who decided and why."""

    __tablename__ = "gateway_moderation_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    subject: Mapped[str] = mapped_column(String(16), nullable=False)
    """prompt, photo, result (a refusal), or account (a restriction)."""
    decision: Mapped[str] = mapped_column(String(16), nullable=False)
    """refused, suspended, banned, unbanned, lifted."""
    category: Mapped[str] = mapped_column(String(64), nullable=False, server_default="")
    detail: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    """The verdict with its scores, or the operator's reason."""
    actor: Mapped[str] = mapped_column(String(100), nullable=False, server_default="moderation")
    """`moderation` for the automatic decisions, else the operator."""
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    """A refused result's job: logged once however often its JobFailed arrives."""
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (
        Index("ix_gateway_moderation_log_telegram_id_created_at", "telegram_id", "created_at"),
        Index("ix_gateway_moderation_log_job_id", "job_id", unique=True),
    )


class UserRestriction(Base):
    """A user banned by an operator (until unbanned), or suspended until a time."""

    __tablename__ = "gateway_restrictions"

    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    banned_reason: Mapped[str | None] = mapped_column(Text)
    banned_by: Mapped[str | None] = mapped_column(String(100))
    suspended_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class HeldRequest(Base):
    """A request whose photo scored between the hold and the refuse thresholds: no job yet,
    kept as the user asked for it (at the price they were shown) until an operator approves
    it (then it is requested) or rejects it (the user is told; nothing was charged)."""

    __tablename__ = "gateway_moderation_queue"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, unique=True)
    """The job request it holds (the same id the request gets once approved)."""
    subject: Mapped[str] = mapped_column(String(16), nullable=False)
    """photo (an input held before any job)."""
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="held")
    """held, approved, rejected."""
    telegram_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)
    chat_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    language: Mapped[str] = mapped_column(String(10), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    price: Mapped[int] = mapped_column(Integer, nullable=False)
    preset_id: Mapped[int | None] = mapped_column(Integer)
    prompt: Mapped[str | None] = mapped_column(Text)
    image_keys: Mapped[list[str]] = mapped_column(ARRAY(String(255)), nullable=False)
    status_message_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    category: Mapped[str] = mapped_column(String(64), nullable=False, server_default="")
    scores: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    decided_by: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )

    __table_args__ = (Index("ix_gateway_moderation_queue_state_id", "state", "id"),)


class UploadFingerprint(Base):
    """The SHA-256 of an upload's decoded pixels, once per account: the same picture uploaded
    by many accounts is a sign of farmed free credits."""

    __tablename__ = "gateway_upload_fingerprints"

    digest: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    first_seen: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class GatewayBroadcast(Base):
    """An operator's broadcast (through the backend API): its text and audience, how many
    chats it was queued for, and whether it was canceled. Its messages are the outbound rows
    keyed `broadcast:<id hex>:<chat>`, where the sender leaves their progress."""

    __tablename__ = "gateway_broadcasts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    """The operator's request id (the idempotency key)."""
    operator: Mapped[str] = mapped_column(String(100), nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    audience: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    recipients: Mapped[int] = mapped_column(Integer, nullable=False)
    dropped: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    """Messages not sent because the broadcast was canceled."""
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
    )


Index(  # a broadcast's progress: its rows by key prefix (0021)
    "ix_gateway_outbound_broadcast_key",
    OutboundMessage.key,
    postgresql_ops={"key": "text_pattern_ops"},
    postgresql_where=text("key LIKE 'broadcast:%'"),
)
Index("ix_gateway_jobs_created_at", GatewayJob.created_at)  # jobs since (0021)
Index("ix_gateway_users_created_at", GatewayUser.created_at)  # new users (0021)
Index("ix_gateway_users_active_at", GatewayUser.active_at)  # active users (0027)


DELIVERY = delivery_tables("bot_gateway", metadata)
