"""Flood protection: how fast one user may send updates. Pure.

A token bucket per user, sized with the chat's own sending limits (`limits`): a burst of
`burst` updates goes through at once (a user tapping quickly through the menus, an album), then
one every `interval_s`. The first update over it is answered once with a "slow down"; later ones
are dropped until the bucket has room again. Like the chat's, the bucket is one number per user,
the moment it is full again (GCRA).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

FORGET_ABOVE = 100_000
"""Users remembered before the idle ones (bucket full again) are forgotten."""


class Verdict(Enum):
    allow = "allow"
    warn = "warn"
    """The first update over the limit: answered once with a 'slow down'."""
    drop = "drop"


class FloodGuard:
    def __init__(
        self,
        *,
        burst: int,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval_s
        self._slack = (burst - 1) * interval_s
        self._clock = clock
        self._full_at: dict[int, float] = {}
        self._warned: set[int] = set()
        self._forget_above = FORGET_ABOVE

    def check(self, user_id: int) -> Verdict:
        now = self._clock()
        full_at = self._full_at.get(user_id, now)
        if full_at - now <= self._slack:
            self._full_at[user_id] = max(full_at, now) + self._interval
            self._warned.discard(user_id)
            if len(self._full_at) > self._forget_above:
                self._forget_idle(now)
            return Verdict.allow
        if user_id in self._warned:
            return Verdict.drop
        self._warned.add(user_id)
        return Verdict.warn

    def _forget_idle(self, now: float) -> None:
        for user_id, full_at in list(self._full_at.items()):
            if full_at <= now:
                del self._full_at[user_id]
                self._warned.discard(user_id)
        self._forget_above = max(FORGET_ABOVE, 2 * len(self._full_at))
