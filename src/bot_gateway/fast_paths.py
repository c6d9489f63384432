"""The common case of the job events every request brings, in one statement (two when the job
must be read first) and no transaction around them.

JobCreated, JobQueued, JobStarted, JobProgress and JobSucceeded arrive for every job. The
consumer tries these first (see `messaging.consumer.TransactionalConsumer`): the job as this
process last left it (`RecentJobs`: the Start that made the request put it there) or, if this
process has not seen it, one read of the job that also tells whether the event was handled;
the change decided and worded by `Notifications` as the general use cases do it; then one write
(`JobMoves.apply`) that moves the job only while it is still as remembered or read, marks the
event handled only if the move applied, and writes the user's messages only if the mark is new.
Each statement commits on its own; there is no BEGIN, COMMIT or ORM session. An event that
changes nothing (a JobQueued overtaken by the start, say) is marked handled the same way. A job
that moved meanwhile (another replica, or its events handled side by side) is read again, a few
times. JobCreated, when this process did not make the request, guesses that it still waits
(nothing else happened yet, as a rule) and writes that first, since it says nothing to the user.

An event that overtook its JobCreated (they travel side by side) finds the job by its request:
jobs gives every event about a job the request id as correlation id; it links the job then.

The rest returns False, nothing written, and the general use case handles the message as it
always does: a job unknown by id and by request (it raises, and the event comes back), a
duplicate, a job that would not hold still.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from bot_gateway.domain import Change, JobState, JobView, Phase
from bot_gateway.notifications import Notifications, request_of
from bot_gateway.recent_jobs import RecentJobs
from bot_gateway.repository import JobMoves
from contracts.envelope import RawEnvelope
from contracts.events import JobCreated, JobProgress, JobQueued, JobStarted, JobSucceeded

TRIES = 3
"""Reads and writes before a job that keeps moving (its events handled side by side) is left
to the general path."""


class FastPaths:
    def __init__(
        self,
        engine: AsyncEngine,
        notifications: Notifications,
        mail_committed: Callable[[], None],
        recent: RecentJobs,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._notifications = notifications
        self._mail_committed = mail_committed
        self._recent = recent

    async def created(self, event: JobCreated, cause: RawEnvelope) -> bool:
        """The job linked to its request, priced. As a rule the request still waits for it
        (nothing else happened yet), so that is written at once, without a read first."""
        waiting = JobView(
            event.request_id, event.chat_id, "", "", None, None, JobState(Phase.requested)
        )
        return await self._move(
            cause,
            lambda job: self._notifications.on_created(job, event),
            request_id=event.request_id,
            link=(event.job_id, event.price),
            expected=waiting,
        )

    async def queued(self, event: JobQueued, cause: RawEnvelope) -> bool:
        return await self._move(
            cause, lambda job: self._notifications.on_queued(job, event), job_id=event.job_id
        )

    async def started(self, event: JobStarted, cause: RawEnvelope) -> bool:
        return await self._move(
            cause, lambda job: self._notifications.on_started(job, event), job_id=event.job_id
        )

    async def progress(self, event: JobProgress, cause: RawEnvelope) -> bool:
        return await self._move(
            cause, lambda job: self._notifications.on_progress(job, event), job_id=event.job_id
        )

    async def succeeded(self, event: JobSucceeded, cause: RawEnvelope) -> bool:
        return await self._move(
            cause, lambda job: self._notifications.on_succeeded(job, event), job_id=event.job_id
        )

    async def _move(
        self,
        cause: RawEnvelope,
        decide: Callable[[JobView], Change | None],
        *,
        job_id: int | None = None,
        request_id: uuid.UUID | None = None,
        link: tuple[int, int | None] | None = None,
        expected: JobView | None = None,
    ) -> bool:
        """The job as this process last left it (`RecentJobs`), tried first with no read;
        else `expected`, the job as it most likely is, which has no title or language: a
        change that would say anything reads the real row then."""
        if job_id is not None:
            request_id = request_of(cause)  # the job's request, should this overtake JobCreated
        async with self._engine.connect() as connection:
            moves = JobMoves(connection, edit_interval_s=self._notifications.edit_interval_s)
            recent = self._recent.get(request_id) if request_id is not None else None
            if recent is not None and job_id is not None and recent.job_id not in (None, job_id):
                recent = None  # a job other than this event's: read the row
            if recent is not None:
                linking = link
                if linking is None and job_id is not None and recent.job_id is None:
                    linking = (job_id, None)
                change = decide(recent) or Change(recent.state)
                if await moves.apply(recent, change, cause.id, cause.type, link=linking):
                    return self._applied(recent, change, linking)
            elif expected is not None:  # a bare guess: no title or language to word a text
                change = decide(expected) or Change(expected.state)
                if (
                    change.status is None
                    and change.mail is None
                    and await moves.apply(expected, change, cause.id, cause.type, link=link)
                ):
                    return True
            for _ in range(TRIES):
                job = await moves.read(cause.id, job_id=job_id, request_id=request_id)
                if job is None:
                    return False
                change = decide(job) or Change(job.state)  # nothing to say: the mark alone
                if job_id is not None and job.job_id is None:
                    link = (job_id, None)  # linked by this event; JobCreated brings the price
                if await moves.apply(job, change, cause.id, cause.type, link=link):
                    return self._applied(job, change, link)
        return False

    def _applied(self, job: JobView, change: Change, link: tuple[int, int | None] | None) -> bool:
        self._recent.moved(job, change.to, link=link)
        if change.status is not None or change.mail is not None:
            self._mail_committed()
        return True
