"""Structured logs: one JSON object per line, carrying the correlation id of the message at hand.

The consumer and the request/reply server put the message they are handling into a context
variable (`handling`); a filter on the process's one log handler copies it onto every record, so
any log line written while a message is handled — by our code or a library's — names its
correlation id, event id and type, and the service. Tracing a request across services is then a
search for its correlation id, which every event caused by it inherits (`new_envelope`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

from messaging.settings import LogFormat

CONTEXT_FIELDS = ("correlation_id", "event_id", "event_type")
# Libraries that install handlers of their own (and do not propagate): their lines join ours.
LIBRARY_LOGGERS = ("faststream", "faststream.access.rabbit", "uvicorn", "uvicorn.error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(service)s %(name)s [%(correlation_id)s]: %(message)s"


@dataclass(frozen=True)
class MessageContext:
    """What is being handled right now, as log lines should name it."""

    correlation_id: str | None = None
    event_id: str | None = None
    event_type: str | None = None


NO_MESSAGE = MessageContext()
_current: ContextVar[MessageContext] = ContextVar("imagebot_message", default=NO_MESSAGE)
_service = "imagebot"


def name_service(name: str) -> None:
    """Name the service this process runs (one per process); every log line carries it."""
    global _service
    _service = name


@contextmanager
def handling(
    *,
    correlation_id: str | None,
    event_id: str | None = None,
    event_type: str | None = None,
) -> Iterator[MessageContext]:
    """Log lines written inside the block (in this task and tasks it starts) name the message."""
    context = MessageContext(correlation_id or None, event_id or None, event_type or None)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current() -> MessageContext:
    return _current.get()


class ContextFilter(logging.Filter):
    """Adds `service` and the message context to every record passing through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        record.service = _service
        for field in CONTEXT_FIELDS:
            if getattr(record, field, None) is None:
                setattr(record, field, getattr(context, field))
        return True


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
        json_ensure_ascii=False,
    )


def configure_logging(
    level: str = "INFO", log_format: LogFormat = "json", *, stream: TextIO | None = None
) -> logging.Handler:
    """Route every log line of the process through one handler in `log_format`; returns it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(ContextFilter())
    handler.imagebot = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for previous in [h for h in root.handlers if getattr(h, "imagebot", False)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level)
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for own in list(library.handlers):
            library.removeHandler(own)
        library.propagate = True
    return handler
