"""The gateway's own metrics: how Telegram's limits bite (429s) and how late messages go out."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TELEGRAM_RETRY_AFTER = Counter(
    "imagebot_telegram_retry_after",
    "Bot API calls Telegram answered with 429 (retry after), by method.",
    ["method"],
)
TELEGRAM_SEND_LAG_SECONDS = Histogram(
    "imagebot_telegram_send_lag_seconds",
    "From when an outbound message was due to Telegram's answer to it, by kind.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
