"""What each incoming event means to the user: the gateway's view of the job moves, and the
message to show is committed to the mailbox in the same transaction (the sender delivers it).

Events that name only a job id find the job by it or, when they overtook the JobCreated that
links it, by their correlation id (the request id jobs gives every job event), and link it.
A job unknown both ways raises (JobStarted and JobProgress are dropped instead), and the event
comes back after a backoff.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import I18n

from bot_gateway import domain, keyboards, texts
from bot_gateway.domain import Change, JobState, JobView, Mail, Phase, rubles
from bot_gateway.models import GatewayJob
from bot_gateway.repository import Credits, Jobs, Mailbox, Users
from bot_gateway.sender import markup_payload
from contracts.envelope import Envelope
from contracts.events import (
    BalanceRefunded,
    CreditsGranted,
    CreditsGrantRefused,
    DebitRejected,
    JobCanceled,
    JobCreated,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRejectReason,
    JobRequestRejected,
    JobRequestRejectedV1,
    JobStarted,
    JobSucceeded,
    PaymentCreated,
    PaymentFailed,
    PaymentSucceeded,
    WeeklyBonusGranted,
)
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


class JobNotLinkedYetError(LookupError):
    """An event about a job unknown here by its id and by its request: try again shortly."""


class Notifications:
    def __init__(self, i18n: I18n, *, default_language: str, edit_interval_s: float) -> None:
        self._i18n = i18n
        self._default = default_language
        self.edit_interval_s = edit_interval_s

    @contextmanager
    def _speaking(self, language: str | None) -> Iterator[None]:
        with self._i18n.context(), self._i18n.use_locale(language or self._default):
            yield

    def _mailbox(self, uow: UnitOfWork) -> Mailbox:
        return Mailbox(uow.session, edit_interval_s=self.edit_interval_s)

    async def _find(self, uow: UnitOfWork, job_id: int) -> GatewayJob | None:
        """The job, linked here and now when this event overtook its JobCreated: jobs gives
        every event about a job its request id as correlation id."""
        jobs = Jobs(uow.session)
        job = await jobs.by_job(job_id)
        request_id = request_of(uow.cause)
        if job is None and request_id is not None:
            job = await jobs.by_request(request_id, lock=True)
            if job is not None and job.job_id is None:
                job.job_id = job_id
            elif job is not None:
                job = None  # that request has another job: this event is not about it
        return job

    async def _job(self, uow: UnitOfWork, job_id: int) -> GatewayJob:
        job = await self._find(uow, job_id)
        if job is None:
            raise JobNotLinkedYetError(f"job {job_id} is not linked to a request yet")
        return job

    async def _apply(self, uow: UnitOfWork, job: GatewayJob, change: Change | None) -> None:
        if change is None:
            return
        job.phase, job.attempt = change.to.phase, change.to.attempt
        job.step, job.total_steps = change.to.step, change.to.total_steps
        mailbox = self._mailbox(uow)
        if change.status is not None:
            await mailbox.show_status(
                job.request_id, job.chat_id, change.status, final=change.final
            )
        if change.mail is not None:
            mail = change.mail
            await mailbox.send(mail.key, job.chat_id, mail.kind, mail.payload)

    @staticmethod
    def _status(
        job: JobView, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> dict[str, Any]:
        return {"message_id": job.status_message_id, "text": text, "markup": markup_payload(markup)}

    # What each job event changes and says; the general use cases below and the consumer's
    # fast paths (`bot_gateway.fast_paths`) both apply these, so they say the same.

    def on_created(self, job: JobView, event: JobCreated) -> Change:
        move = domain.moved_to(job.state, Phase.created)
        return Change(move.to if move else job.state)

    def on_queued(self, job: JobView, event: JobQueued) -> Change | None:
        move = domain.moved_to(job.state, Phase.queued)
        if move is None:
            return None
        with self._speaking(job.language):
            text = texts.queued(job.title, event.position, event.eta_seconds)
            markup = keyboards.cancel_job(job.request_id.hex)
        return Change(move.to, self._status(job, text, markup))

    def on_started(self, job: JobView, event: JobStarted) -> Change | None:
        move = domain.on_started(job.state, event.attempt, event.total_steps)
        if move is None or not move.shown:
            return Change(move.to) if move else None
        with self._speaking(job.language):
            text, markup = texts.started(job.title), keyboards.cancel_job(job.request_id.hex)
        return Change(move.to, self._status(job, text, markup))

    def on_progress(self, job: JobView, event: JobProgress) -> Change | None:
        """Step i of N; the mailbox thins these edits to one every few seconds."""
        move = domain.on_progress(job.state, event.attempt, event.step, event.total_steps)
        if move is None or not move.shown:
            return Change(move.to) if move else None
        with self._speaking(job.language):
            text = texts.progress(job.title, event.step, event.total_steps)
            markup = keyboards.cancel_job(job.request_id.hex)
        return Change(move.to, self._status(job, text, markup))

    def on_succeeded(self, job: JobView, event: JobSucceeded) -> Change | None:
        """The result photo, once per job whatever the duplicates; the status says done."""
        move = domain.moved_to(job.state, Phase.completed)
        if move is None:
            return None
        with self._speaking(job.language):
            status = self._status(job, texts.done(job.title))
            photo = {
                "object_key": event.result_key,
                "caption": texts.result_caption(job.title),
                "markup": markup_payload(keyboards.result(job.request_id.hex)),
            }
        return Change(
            move.to, status, final=True, mail=Mail(f"result:{event.job_id}", "photo", photo)
        )

    async def job_created(self, event: JobCreated, uow: UnitOfWork) -> None:
        """Link the job to the request; the price is known from now on."""
        job = await Jobs(uow.session).by_request(event.request_id, lock=True)
        if job is None:
            log.warning("JobCreated for request %s the gateway never made", event.request_id)
            return
        job.job_id, job.price = event.job_id, event.price
        await self._apply(uow, job, self.on_created(view_of(job), event))

    async def request_rejected(self, event: JobRequestRejected, uow: UnitOfWork) -> None:
        """Jobs refused: say why; nothing was charged. A price that changed since the user
        confirmed it is shown with a button to see the request at the new price, even over
        the plainer v1 copy of this refusal, should that have come first."""
        job = await Jobs(uow.session).by_request(event.request_id, lock=True)
        if job is None:
            return
        repriced = event.reason is JobRejectReason.price_changed
        with self._speaking(job.language):
            text = texts.rejected(job.title, event.reason, event.price)
            markup = keyboards.result(job.request_id.hex) if repriced else None
            change = self._end(job, Phase.rejected, text, markup)
            if change is None and repriced and job.phase == Phase.rejected:
                view = view_of(job)
                change = Change(view.state, self._status(view, text, markup), final=True)
        await self._apply(uow, job, change)

    async def request_rejected_v1(self, event: JobRequestRejectedV1, uow: UnitOfWork) -> None:
        """The same refusal in v1, published beside v2: whichever comes first ends the job.
        Acting on it too means a refusal from jobs before v2 (or whose v2 copy another
        replica, older than v2, dead-lettered) still reaches the user."""
        job = await Jobs(uow.session).by_request(event.request_id, lock=True)
        if job is None:
            return
        with self._speaking(job.language):
            change = self._end(job, Phase.rejected, texts.rejected(job.title, event.reason))
        await self._apply(uow, job, change)

    async def queued(self, event: JobQueued, uow: UnitOfWork) -> None:
        job = await self._job(uow, event.job_id)
        await self._apply(uow, job, self.on_queued(view_of(job), event))

    async def started(self, event: JobStarted, uow: UnitOfWork) -> None:
        job = await self._find(uow, event.job_id)
        if job is not None:
            await self._apply(uow, job, self.on_started(view_of(job), event))

    async def progress(self, event: JobProgress, uow: UnitOfWork) -> None:
        job = await self._find(uow, event.job_id)
        if job is not None:
            await self._apply(uow, job, self.on_progress(view_of(job), event))

    async def succeeded(self, event: JobSucceeded, uow: UnitOfWork) -> None:
        # Jobs' decision, not the runner's report: a late JobCompleted for a job already
        # canceled or failed (and refunded) must not hand the user the photo as well.
        job = await self._job(uow, event.job_id)
        await self._apply(uow, job, self.on_succeeded(view_of(job), event))

    async def failed(self, event: JobFailed, uow: UnitOfWork) -> None:
        job = await self._job(uow, event.job_id)
        with self._speaking(job.language):
            change = self._end(job, Phase.failed, texts.failed(job.title, job.price))
        await self._apply(uow, job, change)

    async def canceled(self, event: JobCanceled, uow: UnitOfWork) -> None:
        job = await self._job(uow, event.job_id)
        with self._speaking(job.language):
            change = self._end(job, Phase.canceled, texts.canceled(job.title))
        await self._apply(uow, job, change)

    async def debit_rejected(self, event: DebitRejected, uow: UnitOfWork) -> None:
        """Not enough credits: the shortfall, and a way to top up."""
        job = await self._job(uow, event.job_id)
        with self._speaking(job.language):
            text = texts.insufficient(job.title, event.price, event.balance, event.shortfall)
            change = self._end(job, Phase.rejected, text, keyboards.topup())
        await self._apply(uow, job, change)

    def _end(
        self, job: GatewayJob, end: Phase, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> Change | None:
        """The job ends in `end`, unless it already has: the final text goes out at once."""
        view = view_of(job)
        move = domain.moved_to(view.state, end)
        return Change(move.to, self._status(view, text, markup), final=True) if move else None

    async def refunded(self, event: BalanceRefunded, uow: UnitOfWork) -> None:
        await self._credit(uow, event.telegram_id, "refund", event.amount, event.balance)
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.refunded(event.amount, event.balance)
        await self._mailbox(uow).send(f"refund:{event.job_id}", chat_id, "text", {"text": text})

    async def payment_created(self, event: PaymentCreated, uow: UnitOfWork) -> None:
        """The payment button."""
        user = await Users(uow.session).by_user_id(event.user_id)
        with self._speaking(user.language if user else None):
            text = texts.payment_link(event.credits, rubles(event.amount_kopecks))
            markup = keyboards.pay(str(event.confirmation_url), event.amount_kopecks)
        payload = {"text": text, "markup": markup_payload(markup)}
        await self._mailbox(uow).send(f"payment:{event.payment_id}", event.chat_id, "text", payload)

    async def payment_succeeded(self, event: PaymentSucceeded, uow: UnitOfWork) -> None:
        await self._credit(uow, event.telegram_id, "topup", event.credits, event.balance)
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.payment_received(event.credits, event.balance)
        key = f"paid:{event.payment_id}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def payment_failed(self, event: PaymentFailed, uow: UnitOfWork) -> None:
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.payment_failed()
        key = f"payment_failed:{event.payment_id or event.request_id}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def weekly_bonus(self, event: WeeklyBonusGranted, uow: UnitOfWork) -> None:
        await self._credit(uow, event.telegram_id, "bonus", event.amount, event.balance)
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.weekly_bonus(event.amount, event.balance)
        key = f"bonus:{event.telegram_id}:{event.week}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def credits_granted(self, event: CreditsGranted, uow: UnitOfWork) -> None:
        """The user hears of the gift, the admin that it landed; each once per grant."""
        await self._credit(uow, event.telegram_id, "grant", event.credits, event.balance)
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.credits_granted(event.credits, event.balance)
        mailbox = self._mailbox(uow)
        await mailbox.send(f"grant:{event.request_id}", chat_id, "text", {"text": text})
        language, chat_id = await self._addressee(uow, event.admin_telegram_id)
        with self._speaking(language):
            text = texts.grant_done(event.telegram_id, event.credits, event.balance)
        await mailbox.send(f"granted:{event.request_id}", chat_id, "text", {"text": text})

    async def grant_refused(self, event: CreditsGrantRefused, uow: UnitOfWork) -> None:
        language, chat_id = await self._addressee(uow, event.admin_telegram_id)
        with self._speaking(language):
            text = texts.grant_refused_unknown(event.telegram_id, event.credits)
        key = f"grant_refused:{event.request_id}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def _credit(
        self, uow: UnitOfWork, telegram_id: int, kind: str, credits: int, balance: int
    ) -> None:
        assert uow.cause is not None
        await Credits(uow.session).record(uow.cause.id, telegram_id, kind, credits, balance)

    async def _addressee(self, uow: UnitOfWork, telegram_id: int) -> tuple[str | None, int]:
        """A user's language and private chat (its id is the user's Telegram id)."""
        user = await Users(uow.session).by_telegram_id(telegram_id)
        return (user.language, user.chat_id) if user else (None, telegram_id)


def request_of(envelope: Envelope[Any] | None) -> uuid.UUID | None:
    """The request a job event is about: its correlation id, when that is a request id."""
    if envelope is None:
        return None
    try:
        return uuid.UUID(envelope.correlation_id)
    except ValueError:
        return None


def view_of(job: GatewayJob) -> JobView:
    return JobView(
        job.request_id,
        job.chat_id,
        job.language,
        job.title,
        job.price,
        job.status_message_id,
        JobState(job.phase, job.attempt, job.step, job.total_steps),
        job.job_id,
    )
