"""Flood protection: how many updates one user may send in a sliding window. Pure."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import Enum


class Verdict(Enum):
    allow = "allow"
    warn = "warn"
    """The first update over the limit: answered once with a 'slow down'."""
    drop = "drop"


class FloodGuard:
    def __init__(
        self,
        *,
        limit: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._seen: dict[int, deque[float]] = {}
        self._warned: dict[int, float] = {}

    def check(self, user_id: int) -> Verdict:
        now = self._clock()
        seen = self._seen.setdefault(user_id, deque())
        while seen and seen[0] <= now - self._window:
            seen.popleft()
        if len(seen) < self._limit:
            seen.append(now)
            self._warned.pop(user_id, None)
            return Verdict.allow
        if user_id in self._warned:
            return Verdict.drop
        self._warned[user_id] = now
        if len(self._seen) > 100_000:
            self._forget_idle(now)
        return Verdict.warn

    def _forget_idle(self, now: float) -> None:
        for user_id, seen in list(self._seen.items()):
            if not seen or seen[-1] <= now - self._window:
                del self._seen[user_id]
                self._warned.pop(user_id, None)
