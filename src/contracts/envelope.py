"""The envelope every event travels in, and the base class of event payloads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Event(BaseModel):
    """Payload of a domain event; subclasses name their type (= routing key) and version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1

    def routing_key(self) -> str:
        return self.event_type


DataT = TypeVar("DataT")


class Envelope(BaseModel, Generic[DataT]):
    """Metadata shared by every event; `id` is also the AMQP message_id and the dedup key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID
    type: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)
    source: str = Field(min_length=1, max_length=50)
    time: AwareDatetime
    correlation_id: str = Field(min_length=1, max_length=100)
    causation_id: uuid.UUID | None = None
    data: DataT


RawEnvelope = Envelope[dict[str, Any]]


class UnknownEventError(ValueError):
    """The envelope names a type or version that is not in the catalog."""


def new_envelope(
    event: Event,
    *,
    source: str,
    cause: Envelope[Any] | None = None,
    correlation_id: str | None = None,
) -> RawEnvelope:
    """Wrap `event`; the correlation id is inherited from `cause` unless given."""
    event_id = uuid.uuid4()
    if correlation_id is None:
        correlation_id = cause.correlation_id if cause is not None else str(event_id)
    return RawEnvelope(
        id=event_id,
        type=event.event_type,
        version=event.event_version,
        source=source,
        time=datetime.now(UTC),
        correlation_id=correlation_id,
        causation_id=cause.id if cause is not None else None,
        data=event.model_dump(mode="json"),
    )


def open_envelope(envelope: RawEnvelope, catalog: dict[tuple[str, int], type[Event]]) -> Event:
    """Validate the payload against the catalog's model for its type and version."""
    model = catalog.get((envelope.type, envelope.version))
    if model is None:
        raise UnknownEventError(f"unknown event {envelope.type!r} version {envelope.version}")
    return model.model_validate(envelope.data)
