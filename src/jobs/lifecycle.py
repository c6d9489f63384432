"""Use cases: what jobs does with each event it receives, one unit of work each.

The domain decides; these read the facts, apply the decision, record the transition and emit
the events in the same transaction. A decision of "nothing" is logged and acknowledged.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from contracts.events import (
    BalanceDebited,
    DebitRejected,
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
    JobRequestRejected,
    JobRequestRejectedV1,
    JobStarted,
    JobSucceeded,
)
from jobs import domain
from jobs.dispatcher import Dispatcher, Sweeper, correlation, facts
from jobs.domain import (
    IN_FLIGHT,
    Limits,
    Move,
    Order,
    Rejection,
    RequestFacts,
    RetryPolicy,
    Stage,
)
from jobs.repository import JobRow, JobsRepository, NewJob, RequestState, deadline
from jobs.settings import JobsSettings
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

FOREIGN_KEY_VIOLATION = "23503"

AnyJobRequested = JobRequestedV1 | JobRequested
"""A request in either version: v2 says the price the user confirmed, v1 (older gateways) not."""


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
        repository = await JobsRepository.of(uow.session)
        await repository.lock_user(event.user_id)
        state = await repository.request_state(event.request_id, event.user_id, event.preset_id)
        if state.existing_job is not None:
            log.info("request %s already has its job; ignoring the repeat", event.request_id)
            return
        decision = self.decide(event, state, uow.cause.time if uow.cause else None)
        if not isinstance(decision, Order):
            self._reject(uow, event, decision)
            return
        job_id = await self._create(repository, event, decision, state, _cause(uow))
        if job_id is None:
            self._reject(uow, event, Rejection(JobRejectReason.invalid_request, "unknown user"))
            return
        uow.emit(self.created(event, decision, job_id), correlation_id=str(event.request_id))

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
                has_image=event.image_key is not None,
                unfinished_jobs=state.unfinished_jobs,
                confirmed_price=event.confirmed_price,
                age_s=age_s,
            ),
            state.preset if event.preset_id else None,
            self._limits,
        )

    def new_job(self, event: AnyJobRequested, order: Order, state: RequestState) -> NewJob:
        return NewJob(
            id=state.next_job_id,
            request_id=event.request_id,
            user_id=event.user_id,
            telegram_id=event.telegram_id,
            chat_id=event.chat_id,
            language=event.language,
            preset_id=event.preset_id,
            prompt=order.prompt,
            image_key=event.image_key,
            price=order.price,
            workflow_type=order.workflow_type,
            seed=secrets.randbelow(2**53),
            payment_deadline=deadline(state.now, self.settings.payment_timeout_s),
        )

    @staticmethod
    def created(event: AnyJobRequested, order: Order, job_id: int) -> JobCreated:
        return JobCreated(
            job_id=job_id,
            request_id=event.request_id,
            user_id=event.user_id,
            telegram_id=event.telegram_id,
            chat_id=event.chat_id,
            price=order.price,
            workflow_type=order.workflow_type,
            preset_id=event.preset_id,
        )

    async def _create(
        self,
        repository: JobsRepository,
        event: AnyJobRequested,
        order: Order,
        state: RequestState,
        cause: uuid.UUID | None,
    ) -> int | None:
        """The new job's id; None when billing has no such user (the legacy foreign key)."""
        try:
            async with repository.connection.begin_nested():
                job_id = await repository.insert_job(self.new_job(event, order, state), cause)
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) != FOREIGN_KEY_VIOLATION:
                raise
            return None
        if job_id is None:  # the lock makes this unreachable; a constraint still guards it
            raise RuntimeError(f"request {event.request_id} raced past the user lock")
        return job_id

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

    async def paid(self, event: BalanceDebited, uow: UnitOfWork) -> None:
        """Paid: the job waits for its owner's free slot, which it usually has at once."""
        locked = await _lock(uow, event.job_id)
        if locked is None:
            return
        repository, job = locked
        move = domain.on_paid(facts(job))
        if move is None:
            log.warning(
                "job %s is %s; a debit changes nothing (billing refunds it on %s)",
                job.id,
                job.stage,
                job.stage,
            )
            if job.debited_at is None:
                await repository.note_debited(job.id, job.now)
            return
        await _move(
            repository,
            job,
            move.to,
            reason=move.reason,
            event_id=_cause(uow),
            debited_at=job.now,
            deadline_at=None,
        )
        await self.dispatcher.dispatch_user(repository, uow, job.user_id)

    async def debit_rejected(self, event: DebitRejected, uow: UnitOfWork) -> None:
        """Unpaid: the job fails; the gateway tells the user from DebitRejected itself."""
        locked = await _lock(uow, event.job_id)
        if locked is None:
            return
        repository, job = locked
        move = domain.on_debit_rejected(facts(job), event.reason.value)
        if move is None:
            log.info("job %s is %s; ignoring a late debit rejection", job.id, job.stage)
            return
        await _move(
            repository,
            job,
            move.to,
            reason=move.reason,
            event_id=_cause(uow),
            finished_at=job.now,
            error=f"{event.reason.value}: price {event.price}, balance {event.balance}",
        )

    async def started(self, event: JobStarted, uow: UnitOfWork) -> None:
        locked = await _lock(uow, event.job_id)
        if locked is None:
            return
        repository, job = locked
        move = domain.on_started(facts(job), event.attempt)
        if move is None:
            log.info(
                "job %s is %s at attempt %s; ignoring a start of attempt %s",
                job.id,
                job.stage,
                facts(job).attempt,
                event.attempt,
            )
            return
        await _move(
            repository,
            job,
            move.to,
            reason=move.reason,
            event_id=_cause(uow),
            started_at=job.now,
            deadline_at=deadline(job.now, self.settings.processing_timeout_s),
        )

    async def completed(self, event: JobCompleted, uow: UnitOfWork) -> None:
        """The first result wins and JobSucceeded announces it; a late or repeated one changes
        nothing, so a job already canceled or failed (and refunded) is never delivered."""
        locked = await _lock(uow, event.job_id)
        if locked is None:
            return
        repository, job = locked
        move = domain.on_completed(facts(job), event.attempt)
        if move is None:
            log.info(
                "job %s is %s; ignoring a result of attempt %s", job.id, job.stage, event.attempt
            )
            return
        await _move(
            repository,
            job,
            move.to,
            reason=move.reason,
            event_id=_cause(uow),
            result_path=event.result_key,
            duration_ms=event.duration_ms,
            finished_at=job.now,
            deadline_at=None,
            next_attempt_at=None,
            error=None,
        )
        uow.emit(
            JobSucceeded(
                job_id=job.id,
                user_id=job.user_id or 0,
                chat_id=job.chat_id or 0,
                attempt=event.attempt,
                result_key=event.result_key,
                duration_ms=event.duration_ms,
            ),
            correlation_id=correlation(job),
        )
        await self.dispatcher.dispatch_user(repository, uow, job.user_id)

    async def attempt_failed(self, event: JobAttemptFailed, uow: UnitOfWork) -> None:
        """Retry after a backoff while attempts remain and the failure may pass; else fail."""
        locked = await _lock(uow, event.job_id)
        if locked is None:
            return
        repository, job = locked
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
        await self._apply_failure(repository, uow, job, move, event.detail)

    async def give_up_attempt(
        self, repository: JobsRepository, uow: UnitOfWork, job: JobRow
    ) -> None:
        """The sweeper found the job's attempt past its deadline."""
        move = domain.on_deadline(facts(job), self._retries)
        if move is None:
            return
        log.warning(
            "job %s: attempt %s %s past its deadline", job.id, facts(job).attempt, job.stage
        )
        await self._apply_failure(
            repository, uow, job, move, f"attempt {facts(job).attempt} timed out"
        )

    async def _apply_failure(
        self,
        repository: JobsRepository,
        uow: UnitOfWork,
        job: JobRow,
        move: Move,
        detail: str,
    ) -> None:
        attempt = facts(job).attempt
        error = f"{move.reason}: {detail}" if detail else move.reason
        if move.retry:
            await _move(
                repository,
                job,
                move.to,
                reason=move.reason,
                event_id=_cause(uow),
                retry_count=attempt,
                next_attempt_at=deadline(job.now, move.delay_s),
                deadline_at=None,
                error=error,
            )
        else:
            await _move(
                repository,
                job,
                move.to,
                reason=move.reason,
                event_id=_cause(uow),
                finished_at=job.now,
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
        await self.dispatcher.dispatch_user(repository, uow, job.user_id)

    async def cancel(self, event: JobCancelRequested, uow: UnitOfWork) -> None:
        """Cancel a user's own unfinished job; a runner stops it if it was handed over."""
        locked = await _lock(uow, event.job_id, owner=event.user_id)
        if locked is None:
            return
        repository, job = locked
        move = domain.on_cancel(facts(job))
        if move is None:
            log.info("job %s is already %s; nothing to cancel", job.id, job.stage)
            return
        was_running = facts(job).stage in IN_FLIGHT
        await _move(
            repository,
            job,
            move.to,
            reason=move.reason,
            event_id=_cause(uow),
            finished_at=job.now,
            deadline_at=None,
            next_attempt_at=None,
            error="canceled by the user",
        )
        uow.emit(
            JobCanceled(
                job_id=job.id,
                user_id=event.user_id,
                chat_id=job.chat_id or event.chat_id,
                was_running=was_running,
            ),
            correlation_id=correlation(job),
        )
        await self.dispatcher.dispatch_user(repository, uow, event.user_id)


async def _lock(
    uow: UnitOfWork, job_id: int, *, owner: int | None = None
) -> tuple[JobsRepository, JobRow] | None:
    """The job, locked after its owner (the one lock order); None if jobs never made it, or
    if it is not `owner`'s when one is named."""
    repository = await JobsRepository.of(uow.session)
    user_id = await repository.lock_owner(job_id)
    if user_id is None:
        log.warning(
            "event %s names job %s, which does not exist here; ignored",
            uow.cause.id if uow.cause else None,
            job_id,
        )
        return None
    if owner is not None and user_id != owner:
        log.warning(
            "user %s asked to cancel job %s, which is not theirs (owner %s); ignored",
            owner,
            job_id,
            user_id,
        )
        return None
    job = await repository.lock_job(job_id)
    if job is None:
        return None
    return repository, job


async def _move(
    repository: JobsRepository, job: JobRow, to: Stage, *, reason: str, **changes: Any
) -> None:
    """Apply a decided move to a job read under its owner's lock, where it cannot have moved."""
    if await repository.move(job.id, facts(job), to, reason=reason, **changes) is None:
        raise RuntimeError(f"job {job.id} left {job.stage} under its owner's lock")


def _cause(uow: UnitOfWork) -> uuid.UUID | None:
    return uow.cause.id if uow.cause is not None else None
