"""How the gateway's view of a job moves; pure, so events arriving out of order cannot move it
backwards (a late progress report never hides a result)."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    requested = "requested"
    created = "created"
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"
    rejected = "rejected"


FINISHED = frozenset({Phase.completed, Phase.failed, Phase.canceled, Phase.rejected})
_RANK = {Phase.requested: 0, Phase.created: 1, Phase.queued: 2, Phase.running: 3}


def advances(current: str, new: Phase) -> bool:
    """Whether a job in `current` may move to `new`: forward only, never out of an end."""
    now = Phase(current)
    if now in FINISHED:
        return False
    if new in FINISHED:
        return True
    return _RANK[new] >= _RANK[now]


def locale_for(language_code: str | None, available: tuple[str, ...], default: str) -> str:
    """The user's Telegram language when we speak it, else the default (Russian)."""
    if language_code:
        primary = language_code.split("-")[0].lower()
        if primary in available:
            return primary
    return default


def rubles(kopecks: int) -> str:
    whole, rest = divmod(kopecks, 100)
    return f"{whole}" if rest == 0 else f"{whole}.{rest:02d}"
