"""Prometheus metrics of event delivery, shared by every service (served at `/metrics`)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

MESSAGES_CONSUMED = Counter(
    "imagebot_messages_consumed_total",
    "Messages taken from a queue, by how they were settled.",
    # outcome: ok, duplicate, retry, dead_letter; the runner also: refused (a permanent
    # JobAttemptFailed sent for it), returned (handed back unstarted on shutdown)
    ["queue", "event_type", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "imagebot_handler_seconds",
    "Time spent handling one message, commit included.",
    ["queue", "event_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
EVENTS_PUBLISHED = Counter(
    "imagebot_events_published_total",
    "Events confirmed by the broker, by routing key.",
    ["source", "routing_key"],
)
PUBLISH_FAILURES = Counter(
    "imagebot_publish_failures_total",
    "Publishes the broker did not confirm (unroutable, timed out, connection lost).",
    ["source", "routing_key"],
)
OUTBOX_UNSENT = Gauge(
    "imagebot_outbox_unsent", "Committed events not yet confirmed by the broker.", ["owner"]
)
OUTBOX_LAG_SECONDS = Gauge(
    "imagebot_outbox_lag_seconds", "Age of the oldest unsent outbox event.", ["owner"]
)
DLQ_MESSAGES = Gauge("imagebot_dlq_messages", "Messages waiting in a dead-letter queue.", ["dlq"])
READY = Gauge(
    "imagebot_ready", "1 when the service is ready (what /readyz says), checked at each scrape."
)
WEBHOOK_RESPONSES = Counter(
    "imagebot_webhook_responses_total",
    "Answers to webhook calls (Telegram's updates, YooKassa's notifications), by HTTP status.",
    ["webhook", "status"],
)


def exposition() -> tuple[bytes, str]:
    """The current metrics in Prometheus' text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
