"""Each database-owning service's own outbox and inbox tables."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB


@dataclass(frozen=True)
class DeliveryTables:
    """The outbox a service's relay drains and the inbox its consumers deduplicate with."""

    owner: str
    outbox: Table
    inbox: Table


def delivery_tables(owner: str, metadata: MetaData) -> DeliveryTables:
    outbox = Table(
        f"{owner}_outbox",
        metadata,
        Column("id", Uuid, primary_key=True),  # the event id, also the AMQP message_id
        Column("seq", BigInteger, Identity(), nullable=False, unique=True),
        Column("routing_key", String(255), nullable=False),
        Column("envelope", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_error", Text),
        Column("next_attempt_at", DateTime(timezone=True)),  # set while a failing row backs off
        Index(
            f"ix_{owner}_outbox_pending",
            "seq",
            postgresql_where="published_at IS NULL",
        ),
        Index(f"ix_{owner}_outbox_published_at", "published_at"),
    )
    inbox = Table(
        f"{owner}_inbox",
        metadata,
        Column("event_id", Uuid, primary_key=True),
        Column("event_type", String(100), nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index(f"ix_{owner}_inbox_received_at", "received_at"),
    )
    return DeliveryTables(owner=owner, outbox=outbox, inbox=inbox)
