"""How the gateway's view of a job moves; pure, so events arriving out of order cannot move it
backwards (a late progress report never hides a result)."""

from __future__ import annotations

from dataclasses import dataclass
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


GRANT_MAX_CREDITS = 1_000_000
"""A typo guard on /grant (an extra zero or two); billing itself takes any positive amount."""
GRANT_REASON_MAX_LENGTH = 500
TELEGRAM_ID_LIMIT = 2**63


@dataclass(frozen=True)
class GrantOrder:
    """An admin's /grant as typed: who gets how many credits, and why."""

    telegram_id: int
    credits: int
    reason: str


def parse_grant(arguments: str | None) -> GrantOrder | None:
    """`<telegram_id> <credits> [reason]`, or None when it does not read as that."""
    parts = (arguments or "").split(maxsplit=2)
    if len(parts) < 2 or not all(part.isascii() and part.isdigit() for part in parts[:2]):
        return None
    telegram_id, credits = int(parts[0]), int(parts[1])
    reason = parts[2].strip() if len(parts) == 3 else ""
    if not 0 < telegram_id < TELEGRAM_ID_LIMIT or not 0 < credits <= GRANT_MAX_CREDITS:
        return None
    if len(reason) > GRANT_REASON_MAX_LENGTH:
        return None
    return GrantOrder(telegram_id, credits, reason)
