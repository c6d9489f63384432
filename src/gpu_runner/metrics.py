"""How busy the device is: a busy-seconds counter and its ratio over a recent window.

The counter is what Prometheus should rate (`rate(imagebot_gpu_busy_seconds_total[5m])` is the
busy ratio over any window); the gauge gives the same over the last `window_s` for a dashboard
or an autoscaler that reads one number.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge

GPU_BUSY_SECONDS = Counter(
    "imagebot_gpu_busy_seconds",
    "Seconds the runner's device spent running a job's steps.",
    ["runner", "workflow"],
)
GPU_BUSY_RATIO = Gauge(
    "imagebot_gpu_busy_ratio",
    "Share of the last window (see the runner's window) the device was running a job.",
    ["runner"],
)


class BusyMeter:
    """Records busy intervals of one device and answers the busy share of the last window."""

    def __init__(
        self,
        runner: str,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runner = runner
        self._window_s = window_s
        self._clock = clock
        self._started_at = clock()
        self._intervals: deque[tuple[float, float]] = deque()
        self._busy_since: float | None = None
        GPU_BUSY_RATIO.labels(runner).set_function(self.ratio)

    @contextmanager
    def busy(self, workflow: str) -> Iterator[None]:
        """The block runs on the device (one at a time)."""
        start = self._busy_since = self._clock()
        try:
            yield
        finally:
            end = self._clock()
            self._busy_since = None
            self._intervals.append((start, end))
            GPU_BUSY_SECONDS.labels(self._runner, workflow).inc(end - start)

    def ratio(self) -> float:
        """Busy share of the last `window_s` (of the time since start, when that is shorter)."""
        now = self._clock()
        since = max(now - self._window_s, self._started_at)
        while self._intervals and self._intervals[0][1] <= since:
            self._intervals.popleft()
        busy = sum(min(end, now) - max(start, since) for start, end in self._intervals)
        if self._busy_since is not None:
            busy += now - max(self._busy_since, since)
        span = now - since
        return min(busy / span, 1.0) if span > 0 else 0.0
