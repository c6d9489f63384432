"""Which jobs were canceled, and a flag per running job that its steps check."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager


class Cancellations:
    """Remembers the last `remember` canceled job ids; sets the flag of a running one."""

    def __init__(self, remember: int = 100_000) -> None:
        self._canceled: OrderedDict[int, None] = OrderedDict()
        self._running: dict[int, threading.Event] = {}
        self._remember = remember

    def cancel(self, job_id: int) -> bool:
        """Record the cancel; True when that job is running here (it stops at its next step)."""
        self._canceled[job_id] = None
        while len(self._canceled) > self._remember:
            self._canceled.popitem(last=False)
        flag = self._running.get(job_id)
        if flag is not None:
            flag.set()
        return flag is not None

    def is_canceled(self, job_id: int) -> bool:
        return job_id in self._canceled

    @property
    def running_job(self) -> int | None:
        """The job running here now (one at a time on the device), if any."""
        return next(iter(self._running), None)

    @contextmanager
    def running(self, job_id: int) -> Iterator[threading.Event]:
        flag = threading.Event()
        if job_id in self._canceled:
            flag.set()
        self._running[job_id] = flag
        try:
            yield flag
        finally:
            self._running.pop(job_id, None)
