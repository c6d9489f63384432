"""Tables jobs owns: the seed's `presets` and `jobs`, `job_transitions`, `workflow_pauses` and its
delivery tables.

The seed's columns stay exactly as they were; everything the lifecycle needs is added beside
them (nullable or defaulted), so the customer's own tools keep reading both tables.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts.events import DEFAULT_WORKFLOW
from messaging.database import metadata
from messaging.tables import delivery_tables


class Base(DeclarativeBase):
    metadata = metadata


class JobStatus(enum.Enum):
    """The seed's coarse status, kept in step with `Job.stage` for the customer's tools."""

    queued = "queued"
    processing = "processing"
    completed = "completed"
    failed = "failed"


class Preset(Base):
    __tablename__ = "presets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    category: Mapped[str | None] = mapped_column(String(50), index=True)
    name: Mapped[str | None] = mapped_column(String(100), index=True)
    prompt: Mapped[str | None] = mapped_column(Text)
    icon: Mapped[str | None] = mapped_column(String(255))
    price: Mapped[float | None] = mapped_column(Float, default=30.0)
    order_index: Mapped[int | None] = mapped_column(Integer, default=0, index=True)
    workflow_type: Mapped[str | None] = mapped_column(
        String(50), default=DEFAULT_WORKFLOW, server_default=DEFAULT_WORKFLOW
    )
    # --- added by jobs (0007)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    # users belongs to billing: jobs keeps the legacy foreign key but never reads that table.
    user_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("users.user_id"))
    image_path: Mapped[str | None] = mapped_column(String(255))
    prompt: Mapped[str | None] = mapped_column(Text)
    status: Mapped[JobStatus | None] = mapped_column(Enum(JobStatus), default=JobStatus.queued)
    result_path: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int | None] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), onupdate=func.now()
    )
    # --- added by jobs (0007); NULL on rows older than the lifecycle
    request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True)
    stage: Mapped[str | None] = mapped_column(String(20))
    """The detailed lifecycle state (`jobs.domain.Stage`); `status` is derived from it."""
    preset_id: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[int | None] = mapped_column(Integer)
    workflow_type: Mapped[str | None] = mapped_column(String(50))
    telegram_id: Mapped[int | None] = mapped_column(BigInteger)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    language: Mapped[str | None] = mapped_column(String(10))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    debited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When a dispatched or processing attempt is given up on (timeout sweeper)."""
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # --- added by jobs (0012)
    extra_image_paths: Mapped[list[str] | None] = mapped_column(ARRAY(String(255)))
    """An album's second and third images (`image_path` holds the first)."""

    __table_args__ = (
        Index("ix_jobs_user_id_stage", "user_id", "stage"),
        Index(
            "ix_jobs_ready",
            "next_attempt_at",
            postgresql_where=text("stage = 'waiting'"),
        ),
        Index(
            "ix_jobs_deadline",
            "deadline_at",
            postgresql_where=text("stage IN ('dispatched', 'processing')"),
        ),
        Index(
            "ix_jobs_line",
            "workflow_type",
            "dispatched_at",
            postgresql_where=text("stage = 'dispatched'"),
        ),
        Index(
            "ix_jobs_recent_durations",
            "workflow_type",
            "finished_at",
            postgresql_where=text("duration_ms IS NOT NULL"),
        ),
    )


class JobTransition(Base):
    """Every stage change of every job, with the event that caused it."""

    __tablename__ = "job_transitions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    from_stage: Mapped[str | None] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(20), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str | None] = mapped_column(String(100))
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    """The incoming event that caused it; NULL for the dispatcher's and sweeper's own moves."""
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class WorkflowPause(Base):
    """A workflow whose queue an operator paused: its paid jobs wait in jobs, none dispatched."""

    __tablename__ = "workflow_pauses"

    workflow_type: Mapped[str] = mapped_column(String(50), primary_key=True)
    operator: Mapped[str] = mapped_column(String(100), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    """The operator's command that paused it."""
    paused_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


# The operators' lists on a big shop (migration 0024): newest first by stage, preset, time.
Index("ix_jobs_stage_id", Job.stage, Job.id)
Index("ix_jobs_preset_id_id", Job.preset_id, Job.id)
Index("ix_jobs_created_at", Job.created_at)


DELIVERY = delivery_tables("jobs", metadata)
