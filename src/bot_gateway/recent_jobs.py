"""The jobs this process moved last, as it left them: the facts a job event decides on first.

Remembered facts are never trusted: the move applies only while the row is still as
remembered (phase, attempt, step, total steps; see `repository.move_statement`). A job another
replica moved, or one this process forgot, costs the read the memory would have saved, nothing
more. What a job's memory says besides the state (chat, language, title, price, status message)
does not change once the request is made, but for the price that JobCreated brings, and that is
kept too. States only move forward, so a remembered one is never ahead of the row."""

from __future__ import annotations

import dataclasses
import uuid
from collections import OrderedDict

from bot_gateway.domain import FINISHED, JobState, JobView, Phase

SIZE = 10_000
"""Jobs remembered at most (oldest forgotten first): a few minutes of full load."""


class RecentJobs:
    def __init__(self, size: int = SIZE) -> None:
        self._jobs: OrderedDict[uuid.UUID, JobView] = OrderedDict()
        self._size = size

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, request_id: uuid.UUID) -> JobView | None:
        return self._jobs.get(request_id)

    def moved(
        self,
        job: JobView,
        to: JobState,
        *,
        link: tuple[int, int | None] | None = None,
    ) -> None:
        """`job` as read or guessed, now moved to `to` (and linked); a finished job moves no
        more and is forgotten."""
        if Phase(to.phase) in FINISHED:
            self._jobs.pop(job.request_id, None)
            return
        if link is not None:
            job_id, price = link
            job = dataclasses.replace(
                job, job_id=job_id, price=job.price if price is None else price
            )
        self._jobs[job.request_id] = dataclasses.replace(job, state=to)
        self._jobs.move_to_end(job.request_id)
        while len(self._jobs) > self._size:
            self._jobs.popitem(last=False)
