"""JSON Schemas of the public contract: one document per event, envelope included."""

from __future__ import annotations

from typing import Any

from contracts.envelope import Envelope, Event
from contracts.events import CATALOG

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_schema(event: type[Event]) -> dict[str, Any]:
    """The schema of a whole message carrying `event`: envelope with typed `data`."""
    schema = Envelope[event].model_json_schema()  # type: ignore[valid-type]
    schema["$schema"] = SCHEMA_DIALECT
    schema["$id"] = f"urn:imagebot:event:{event.event_type}:v{event.event_version}"
    schema["title"] = event.__name__
    schema["description"] = (event.__doc__ or "").strip()
    schema["properties"]["type"] = {"const": event.event_type, "title": "Type"}
    schema["properties"]["version"] = {"const": event.event_version, "title": "Version"}
    return schema


def schema_filename(event: type[Event]) -> str:
    return f"{event.event_type}.v{event.event_version}.json"


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name → schema, for every event of the catalog."""
    return {schema_filename(event): event_schema(event) for event in CATALOG.values()}
