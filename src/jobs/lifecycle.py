"""Use cases: what jobs does with each event it receives, one unit of work each.

The domain decides, on the facts a job has as a rule (a debit comes for a job awaiting it, a
start for the attempt just dispatched) or, when the job is not as expected, on the facts read;
the move applies only while the job is as decided on, with its transition, the message's mark
and the events it causes. A decision of "nothing" is logged and acknowledged.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from contracts.events import (
    BalanceDebited,
    BalanceDebitedV1,
    DebitRejected,
    DebitRejectedV1,
    JobAttemptFailed,
    JobCanceled,
    JobCancelRequested,
    JobCompleted,
    JobCreated,
    JobFailed,
    JobRejectReason,
    JobRejectReasonV1,
    JobRequested,
    JobRequestedV1,
    JobRequestedV2,
    JobRequestRejected,
    JobRequestRejectedV1,
    JobStarted,
    JobSucceeded,
)
from jobs import domain, queues
from jobs.dispatcher import Dispatcher, Sweeper, correlation, facts
from jobs.domain import (
    IN_FLIGHT,
    JobFacts,
    Limits,
    Move,
    Order,
    Rejection,
    RequestFacts,
    RetryPolicy,
    Stage,
)
from jobs.repository import (
    NOW,
    FromNow,
    JobRow,
    JobsRepository,
    Moved,
    NewJob,
    RequestState,
    creation_statement,
    deadline,
    move_statement,
)
from jobs.settings import JobsSettings
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

FOREIGN_KEY_VIOLATION = "23503"
AWAITING_PAYMENT = JobFacts(stage=Stage.awaiting_payment, retry_count=0)
"""Where a debited job is, as a rule: billing debits once, right after JobCreated."""

AnyJobRequested = JobRequestedV1 | JobRequestedV2 | JobRequested
"""A request in either version: v2 says the price the user confirmed, v1 (older gateways) not."""


class Asker(Protocol):
    """Who a new job is for and what it is asked on: a request (any version), or an
    operator's retry of a failed job (`domain.Rerun`)."""

    @property
    def request_id(self) -> uuid.UUID: ...
    @property
    def user_id(self) -> int: ...
    @property
    def telegram_id(self) -> int: ...
    @property
    def chat_id(self) -> int: ...
    @property
    def language(self) -> str: ...
    @property
    def preset_id(self) -> int | None: ...
    @property
    def images(self) -> tuple[str, ...]: ...


class JobLifecycle:
    """The job lifecycle from request to result, one method per incoming event."""

    def __init__(self, settings: JobsSettings) -> None:
        self.settings = settings
        self.dispatcher = Dispatcher(settings)
        self.sweeper = Sweeper(settings, self.give_up_attempt)
        self._limits = Limits(
            custom_prompt_price=settings.custom_prompt_price,
            prompt_max_length=settings.prompt_max_length,
            max_unfinished_jobs=settings.max_unfinished_jobs_per_user,
            unconfirmed_max_age_s=settings.unconfirmed_request_max_age_s,
        )
        self._retries = RetryPolicy(
            max_attempts=settings.max_attempts,
            backoff_s=settings.retry_backoff_s,
            backoff_max_s=settings.retry_backoff_max_s,
        )

    async def request(self, event: AnyJobRequested, uow: UnitOfWork) -> None:
        """Create and price the job (once per request id), or refuse it with a reason."""
        jobs = JobsRepository(uow)
        await jobs.lock_user(event.user_id)
        state = await jobs.request_state(event.request_id, event.user_id, event.preset_id)
        if state.existing_job is not None:
            log.info("request %s already has its job; ignoring the repeat", event.request_id)
            return
        decision = self.decide(event, state, uow.cause.time if uow.cause else None)
        if not isinstance(decision, Order):
            self._reject(uow, event, decision)
            return
        try:
            made = await self.create(uow, self.new_job(event, decision, state))
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) != FOREIGN_KEY_VIOLATION:
                raise
            await uow.rollback()  # billing has no such user (the legacy foreign key)
            self._reject(uow, event, Rejection(JobRejectReason.invalid_request, "unknown user"))
            return
        if made is None:  # the lock makes this unreachable; a constraint still guards it
            raise RuntimeError(f"request {event.request_id} raced past the user lock")

    def decide(
        self, event: AnyJobRequested, state: RequestState, asked_at: datetime | None
    ) -> Order | Rejection:
        """The domain's answer to a request, from what was read under the user's lock;
        `asked_at` is the request's envelope time."""
        age_s = (state.now - asked_at).total_seconds() if asked_at is not None else 0.0
        return domain.take_order(
            RequestFacts(
                preset_id=event.preset_id,
                prompt=event.prompt,
                has_image=bool(event.images),
                unfinished_jobs=state.unfinished_jobs,
                confirmed_price=event.confirmed_price,
                age_s=age_s,
            ),
            state.preset if event.preset_id else None,
            self._limits,
        )

    def new_job(self, event: Asker, order: Order, state: RequestState) -> NewJob:
        """The job `event` asks for, as `order` says, with a seed of its own."""
        return NewJob(
            id=state.next_job_id,
            request_id=event.request_id,
            user_id=event.user_id,
            telegram_id=event.telegram_id,
            chat_id=event.chat_id,
            language=event.language,
            preset_id=event.preset_id,
            prompt=order.prompt,
            image_keys=event.images,
            price=order.price,
            workflow_type=order.workflow_type,
            seed=secrets.randbelow(2**53),
            payment_deadline=deadline(state.now, self.settings.payment_timeout_s),
        )

    @staticmethod
    async def create(uow: UnitOfWork, job: NewJob) -> Row[Any] | None:
        """Make `job`, awaiting payment, and announce it (JobCreated: billing debits its price
        next), with the events emitted so far, then commit; None when its request has its job
        already (nothing written)."""
        uow.emit(_created(job), correlation_id=str(job.request_id))
        return await uow.apply(*creation_statement(job, _cause(uow)))

    def _reject(self, uow: UnitOfWork, event: AnyJobRequested, rejection: Rejection) -> None:
        """JobRequestRejected, in v2 and beside it in v1 until every subscriber reads v2."""
        log.info(
            "refusing request %s of user %s: %s (%s)",
            event.request_id,
            event.user_id,
            rejection.reason.value,
            rejection.detail,
        )
        refused = JobRequestRejected(
            request_id=event.request_id,
            user_id=event.user_id,
            chat_id=event.chat_id,
            reason=rejection.reason,
            detail=rejection.detail,
            price=rejection.price,
        )
        uow.emit(refused, correlation_id=str(event.request_id))
        reason_v1 = JobRejectReasonV1.__members__.get(
            rejection.reason.name, JobRejectReasonV1.invalid_request
        )  # v1 has no `price_changed`: the nearest it has
        refused_v1 = JobRequestRejectedV1(
            request_id=event.request_id,
            user_id=event.user_id,
            chat_id=event.chat_id,
            reason=reason_v1,
            detail=rejection.detail,
        )
        uow.emit(refused_v1, correlation_id=str(event.request_id))

    async def paid(self, event: BalanceDebited | BalanceDebitedV1, uow: UnitOfWork) -> None:
        """Paid: the job waits for its owner's free slot, which it usually has at once."""
        jobs = JobsRepository(uow)
        if not await _lock_owner(jobs, event.job_id):
            return
        moved, job = await _decide_and_move(
            jobs,
            event.job_id,
            domain.on_paid,
            expected=AWAITING_PAYMENT,
            event_id=_cause(uow),
            debited_at=NOW,
            deadline_at=None,
        )
        if moved is None:
            if job is not None:  # past payment: a late debit (or this one, delivered again)
                log.info(
                    "job %s is %s; a debit changes nothing (billing refunds it)", job.id, job.stage
                )
                await jobs.note_debited(job.id)
            return
        await self.dispatcher.dispatch_user(jobs, uow, moved.user_id)
        await queues.tell_if_held(uow, moved.id)  # its workflow's queue is paused

    async def debit_rejected(self, event: DebitRejected | DebitRejectedV1, uow: UnitOfWork) -> None:
        """Unpaid: the job fails; the gateway tells the user from DebitRejected itself."""
        jobs = JobsRepository(uow)
        if not await _lock_owner(jobs, event.job_id):
            return
        moved, job = await _decide_and_move(
            jobs,
            event.job_id,
            lambda job: domain.on_debit_rejected(job, event.reason.value),
            expected=AWAITING_PAYMENT,
            event_id=_cause(uow),
            finished_at=NOW,
            error=f"{event.reason.value}: price {event.price}, balance {event.balance}",
        )
        if moved is None and job is not None:
            log.info("job %s is %s; ignoring a late debit rejection", job.id, job.stage)

    async def started(self, event: JobStarted, uow: UnitOfWork) -> None:
        """The attempt runs, on a deadline: one statement, without the owner's lock, which a
        start does not need (the owner's jobs in flight stay as many, none is dispatched)."""
        jobs = JobsRepository(uow)
        expected: JobFacts | None = JobFacts(Stage.dispatched, event.attempt - 1)
        for _ in range(TRIES):
            if expected is None:
                job = await jobs.job(event.job_id, lock=False)
                if job is None:
                    log.warning("JobStarted names job %s, unknown here; ignored", event.job_id)
                    return
                expected = facts(job)
            move = domain.on_started(expected, event.attempt)
            if move is None:
                log.info(
                    "job %s is %s at attempt %s; ignoring a start of attempt %s",
                    event.job_id,
                    expected.stage,
                    expected.attempt,
                    event.attempt,
                )
                return
            statement = move_statement(
                event.job_id,
                expected,
                move.to,
                reason=move.reason,
                event_id=_cause(uow),
                started_at=NOW,
                deadline_at=FromNow(self.settings.processing_timeout_s),
            )
            if await uow.apply(*statement) is not None:
                return
            expected = None  # it moved meanwhile: read it, decide again
        raise RuntimeError(f"job {event.job_id} kept moving under a start")

    async def completed(self, event: JobCompleted, uow: UnitOfWork) -> None:
        """The first result wins and JobSucceeded announces it; a late or repeated one changes
        nothing, so a job already canceled or failed (and refunded) is never delivered."""
        jobs = JobsRepository(uow)
        if not await _lock_owner(jobs, event.job_id):
            return
        moved, job = await _decide_and_move(
            jobs,
            event.job_id,
            lambda job: domain.on_completed(job, event.attempt),
            expected=JobFacts(Stage.processing, event.attempt - 1),
            event_id=_cause(uow),
            result_path=event.result_key,
            duration_ms=event.duration_ms,
            finished_at=NOW,
            deadline_at=None,
            next_attempt_at=None,
            error=None,
        )
        if moved is None:
            if job is not None:
                log.info(
                    "job %s is %s; ignoring a result of attempt %s",
                    job.id,
                    job.stage,
                    event.attempt,
                )
            return
        uow.emit(
            JobSucceeded(
                job_id=moved.id,
                user_id=moved.user_id,
                chat_id=moved.chat_id or 0,
                attempt=event.attempt,
                result_key=event.result_key,
                duration_ms=event.duration_ms,
            ),
            correlation_id=correlation(moved),
        )
        await self.dispatcher.dispatch_user(jobs, uow, moved.user_id)

    async def attempt_failed(self, event: JobAttemptFailed, uow: UnitOfWork) -> None:
        """Retry after a backoff while attempts remain and the failure may pass; else fail."""
        jobs = JobsRepository(uow)
        if not await _lock_owner(jobs, event.job_id):
            return
        job = await jobs.job(event.job_id)
        if job is None:
            return
        move = domain.on_attempt_failed(
            facts(job),
            event.attempt,
            retryable=event.retryable,
            reason=event.reason,
            policy=self._retries,
        )
        if move is None:
            log.info(
                "job %s is %s at attempt %s; ignoring a failure of attempt %s",
                job.id,
                job.stage,
                facts(job).attempt,
                event.attempt,
            )
            return
        await self._apply_failure(jobs, uow, job, move, event.detail)

    async def give_up_attempt(self, jobs: JobsRepository, uow: UnitOfWork, job: JobRow) -> None:
        """The sweeper found the job's attempt past its deadline."""
        move = domain.on_deadline(facts(job), self._retries)
        if move is None:
            return
        log.warning(
            "job %s: attempt %s %s past its deadline", job.id, facts(job).attempt, job.stage
        )
        await self._apply_failure(jobs, uow, job, move, f"attempt {facts(job).attempt} timed out")

    async def _apply_failure(
        self,
        jobs: JobsRepository,
        uow: UnitOfWork,
        job: JobRow,
        move: Move,
        detail: str,
    ) -> None:
        attempt = facts(job).attempt
        error = f"{move.reason}: {detail}" if detail else move.reason
        if move.retry:
            await _move(
                jobs,
                job,
                move.to,
                reason=move.reason,
                event_id=_cause(uow),
                retry_count=attempt,
                next_attempt_at=FromNow(move.delay_s),
                deadline_at=None,
                error=error,
            )
        else:
            await _move(
                jobs,
                job,
                move.to,
                reason=move.reason,
                event_id=_cause(uow),
                finished_at=NOW,
                deadline_at=None,
                error=error,
            )
            uow.emit(
                JobFailed(
                    job_id=job.id,
                    user_id=job.user_id or 0,
                    chat_id=job.chat_id or 0,
                    reason=move.reason,
                    detail=f"attempt {attempt} of {self.settings.max_attempts}: {detail}"[:2000],
                ),
                correlation_id=correlation(job),
            )
        await self.dispatcher.dispatch_user(jobs, uow, job.user_id)

    async def cancel(self, event: JobCancelRequested, uow: UnitOfWork) -> None:
        """Cancel a user's own unfinished job; a runner stops it if it was handed over."""
        jobs = JobsRepository(uow)
        owner = await jobs.lock_owner(event.job_id)
        if owner != event.user_id:
            log.warning(
                "user %s asked to cancel job %s, which is not theirs (owner %s); ignored",
                event.user_id,
                event.job_id,
                owner,
            )
            return
        job = await jobs.job(event.job_id)
        if job is None:
            return
        await self.cancel_job(jobs, uow, job, chat_id=event.chat_id, error="canceled by the user")

    async def cancel_job(
        self,
        jobs: JobsRepository,
        uow: UnitOfWork,
        job: JobRow,
        *,
        error: str,
        chat_id: int | None = None,
        reason: str | None = None,
    ) -> bool | None:
        """Cancel `job` (read under its owner's lock): JobCanceled tells billing to refund, a
        runner to stop and the gateway to tell the user. Whether it was running; None when it
        had finished (nothing changes, nothing is sent)."""
        move = domain.on_cancel(facts(job))
        if move is None:
            log.info("job %s is already %s; nothing to cancel", job.id, job.stage)
            return None
        was_running = facts(job).stage in IN_FLIGHT
        await _move(
            jobs,
            job,
            move.to,
            reason=reason or move.reason,
            event_id=_cause(uow),
            finished_at=NOW,
            deadline_at=None,
            next_attempt_at=None,
            error=error,
        )
        uow.emit(
            JobCanceled(
                job_id=job.id,
                user_id=job.user_id,
                chat_id=job.chat_id or chat_id or 0,
                was_running=was_running,
            ),
            correlation_id=correlation(job),
        )
        await self.dispatcher.dispatch_user(jobs, uow, job.user_id)
        return was_running


def _created(job: NewJob) -> JobCreated:
    return JobCreated(
        job_id=job.id,
        request_id=job.request_id,
        user_id=job.user_id,
        telegram_id=job.telegram_id,
        chat_id=job.chat_id,
        price=job.price,
        workflow_type=job.workflow_type,
        preset_id=job.preset_id,
    )


TRIES = 3
"""Reads and moves before a job that keeps moving under an unlocked change is given back."""


async def _lock_owner(jobs: JobsRepository, job_id: int) -> bool:
    """Lock the job's owner: the one lock order (owner, then job); False if jobs never made
    the job (logged)."""
    if await jobs.lock_owner(job_id) is None:
        log.warning("an event names job %s, which does not exist here; ignored", job_id)
        return False
    return True


async def _decide_and_move(
    jobs: JobsRepository,
    job_id: int,
    decide: Callable[[JobFacts], Move | None],
    *,
    expected: JobFacts,
    event_id: uuid.UUID | None,
    **changes: Any,
) -> tuple[Moved | None, JobRow | None]:
    """Decide on the facts the job has as a rule and move it while it still has them; if it
    does not, read it (the owner's lock held: it holds still) and decide on what it is.
    What moved (None when the domain decided nothing), and the job if it was read."""
    move = decide(expected)
    if move is not None:
        moved = await jobs.move(
            job_id, expected, move.to, reason=move.reason, event_id=event_id, **changes
        )
        if moved is not None:
            return moved, None
    job = await jobs.job(job_id)
    if job is None:
        return None, None
    move = decide(facts(job))
    if move is None:
        return None, job
    moved = await jobs.move(
        job_id, facts(job), move.to, reason=move.reason, event_id=event_id, **changes
    )
    if moved is None:
        raise RuntimeError(f"job {job_id} left {job.stage} under its owner's lock")
    return moved, job


async def _move(
    jobs: JobsRepository, job: JobRow, to: Stage, *, reason: str, **changes: Any
) -> None:
    """Apply a decided move to a job read under its owner's lock, where it cannot have moved."""
    if await jobs.move(job.id, facts(job), to, reason=reason, **changes) is None:
        raise RuntimeError(f"job {job.id} left {job.stage} under its owner's lock")


def _cause(uow: UnitOfWork) -> uuid.UUID | None:
    return uow.cause.id if uow.cause is not None else None
