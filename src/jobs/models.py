"""Tables jobs owns: the customer's `presets` and `jobs`, and its delivery tables."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import DateTime, Enum, Float, ForeignKey, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts.events import DEFAULT_WORKFLOW
from messaging.database import metadata
from messaging.tables import delivery_tables


class Base(DeclarativeBase):
    metadata = metadata


class JobStatus(enum.Enum):
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


DELIVERY = delivery_tables("jobs", metadata)
