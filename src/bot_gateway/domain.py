"""How the gateway's view of a job moves; pure, so events arriving out of order cannot move it
backwards (a late progress report never hides a result). Also the views the use cases read."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


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


@dataclass(frozen=True)
class JobState:
    """How far a job got as the gateway sees it: its phase, and the runner's attempt and steps
    (a retry counts its steps anew)."""

    phase: str
    attempt: int = 0
    step: int = 0
    total_steps: int = 0


@dataclass(frozen=True)
class Move:
    """Where an event takes a job; `shown` says whether the user sees a new status."""

    to: JobState
    shown: bool = True


@dataclass(frozen=True)
class JobView:
    """What the use cases read of a `gateway_jobs` row."""

    request_id: uuid.UUID
    chat_id: int
    language: str
    title: str
    price: int | None
    status_message_id: int | None
    state: JobState
    job_id: int | None = None
    """None until the job is linked to its request (by JobCreated, or the first event after)."""


@dataclass(frozen=True)
class RequestView:
    """A user's request as the chat needs it again: whose it is, what was asked, how far it got."""

    request_id: uuid.UUID
    telegram_id: int
    title: str
    phase: str
    preset_id: int | None
    prompt: str | None
    image_keys: tuple[str, ...]
    """The photos it edits, in the order sent."""
    job_id: int | None


@dataclass(frozen=True)
class KnownUser:
    """A `gateway_users` row: billing's account id, private chat and language."""

    user_id: int
    chat_id: int
    language: str
    blocked: bool = False
    """The user blocked the bot (broadcasts skip them) and has not come back since."""
    chosen_language: str | None = None
    """The language the user picked in the menu: it wins over Telegram's from then on."""


@dataclass(frozen=True)
class ResultView:
    """A user's paid result, as a resend needs it: whose it is and where it is kept."""

    request_id: uuid.UUID
    telegram_id: int
    title: str
    result_key: str | None
    completed_at: datetime | None


@dataclass(frozen=True)
class CreditView:
    """Credits that reached a user, as billing announced them (for /history)."""

    kind: str
    credits: int
    balance: Decimal
    at: datetime


@dataclass(frozen=True)
class Mail:
    """A message to the job's chat, sent once per `key`."""

    key: str
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Change:
    """What an event does to a job: its next state, the status message's next text (`final`
    goes out at once), and any other message."""

    to: JobState
    status: dict[str, Any] | None = None
    final: bool = False
    mail: Mail | None = None
    result_key: str | None = None
    """The paid result's key, kept on the job (with the time) so it can be sent again."""

    @property
    def says_something(self) -> bool:
        """Whether the user hears of it (a status text or a message), or it is a silent move."""
        return self.status is not None or self.mail is not None


def moved_to(now: JobState, phase: Phase) -> Move | None:
    """The job in `phase`, if that is forward (see `advances`)."""
    return Move(replace(now, phase=phase)) if advances(now.phase, phase) else None


def on_started(now: JobState, attempt: int, total_steps: int) -> Move | None:
    """Running, unless finished or this attempt's progress overtook its start (keep the steps)."""
    base = _of_attempt(now, attempt)
    if base is None:
        return None
    if not advances(base.phase, Phase.running) or base.step > 0:
        return _quietly(now, base)
    return Move(replace(base, phase=Phase.running, total_steps=total_steps))


def on_progress(now: JobState, attempt: int, step: int, total_steps: int) -> Move | None:
    """Step `step` of `total_steps`, if it is news for this attempt."""
    base = _of_attempt(now, attempt)
    if base is None:
        return None
    if not advances(base.phase, Phase.running) or step <= base.step:
        return _quietly(now, base)
    return Move(replace(base, phase=Phase.running, step=step, total_steps=total_steps))


def _of_attempt(now: JobState, attempt: int) -> JobState | None:
    """None for reports of an earlier attempt; a later attempt starts counting steps anew."""
    if attempt < now.attempt:
        return None
    return now if attempt == now.attempt else replace(now, attempt=attempt, step=0)


def _quietly(now: JobState, base: JobState) -> Move | None:
    """Nothing to show; a later attempt is still remembered."""
    return None if base == now else Move(base, shown=False)


def locale_for(
    language_code: str | None,
    available: tuple[str, ...],
    default: str,
    foreign: str | None = None,
    chosen: str | None = None,
) -> str:
    """The language the user `chosen` in the menu; else their Telegram language when we speak
    it; `foreign` (English) for a language we do not; the default (Russian) when Telegram
    names none."""
    if chosen in available:
        return str(chosen)
    if not language_code:
        return default
    primary = language_code.split("-")[0].lower()
    if primary in available:
        return primary
    return foreign or default


START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What Telegram lets a t.me/<bot>?start= link carry: up to 64 of A-Z, a-z, 0-9, _ and -."""


def start_source(payload: str | None) -> str | None:
    """A /start deep-link payload as a campaign or referral source; anything a link cannot
    carry (typed by hand after /start) is none."""
    if payload is None or not START_PAYLOAD.fullmatch(payload):
        return None
    return payload


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
