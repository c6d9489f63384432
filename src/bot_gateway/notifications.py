"""What each incoming event means to the user: the gateway's view of the job moves, and the
message to show is committed to the mailbox with it (the sender delivers it).

Every job event takes one path. The domain decides on the job as this process last left it
(`RecentJobs`: the Start that made the request put it there) or, not remembered, as read; the
unit of work then applies the move, the event's mark and the user's messages as one statement,
which writes only while the job is still as decided on. A job that moved meanwhile (another
replica, or its events handled side by side) is read again and decided again. So the common
event is one statement (two when the job must be read first), with no transaction around it.
A JobCreated this process did not ask for guesses that its request still waits (nothing else
happened yet, as a rule), which says nothing to the user and needs no read either.

Events that name only a job id find the job by it or, when they overtook the JobCreated that
links it, by their correlation id (the request id jobs gives every job event), and link it.
A job unknown both ways raises (JobStarted and JobProgress are dropped instead), and the event
comes back after a backoff. An event that changes nothing is only marked handled.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from decimal import Decimal
from typing import Any

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import I18n

from bot_gateway import domain, keyboards, screening, texts
from bot_gateway.domain import Change, JobState, JobView, Mail, Phase, rubles
from bot_gateway.recent_jobs import RecentJobs
from bot_gateway.repository import (
    Credits,
    Jobs,
    Mailbox,
    Users,
    followed_statement,
    move_statement,
)
from bot_gateway.sender import markup_payload
from contracts.envelope import Envelope
from contracts.events import (
    BalanceRefunded,
    CreditsAdjusted,
    CreditsGranted,
    CreditsGrantRefused,
    DebitRejected,
    JobCanceled,
    JobCreated,
    JobFailed,
    JobHeld,
    JobProgress,
    JobQueued,
    JobRejectReason,
    JobRequestRejected,
    JobRequestRejectedV1,
    JobRetried,
    JobStarted,
    JobSucceeded,
    PaymentCreated,
    PaymentFailed,
    PaymentSucceeded,
    TopUpRefunded,
    WeeklyBonusGranted,
)
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

STARS_CURRENCY = "XTR"
RECEIPT_CONTACT_MISSING = "receipt_contact_missing"
"""Billing's PaymentFailed reason for a top-up that needs a 54-FZ receipt and has no contact."""

TRIES = 8
"""Reads and writes before a job that keeps moving (its events handled side by side) is given
back to the consumer, which retries the event after a backoff. Each miss means another event of
the job was applied meanwhile, so a handful is plenty."""

Decide = Callable[[JobView], Change | None]


OLDER_COPY: ContextVar[bool] = ContextVar("older_copy", default=False)
"""True while a v1 copy of a balance event is handled as its v2 (bot_gateway.handlers): it is
told (the mailbox key sends the notice once) but not listed in /history, which its v2 copy does
(history rows are keyed by the event's id, which the two copies do not share). A billing of the
release before exact balances publishes v1 alone: those credits are told, not listed."""


class JobNotLinkedYetError(LookupError):
    """An event about a job unknown here by its id and by its request: try again shortly."""


class Notifications:
    def __init__(
        self,
        i18n: I18n,
        *,
        default_language: str,
        edit_interval_s: float,
        recent_jobs: RecentJobs | None = None,
        mail_committed: Callable[[], None] = lambda: None,
    ) -> None:
        self._i18n = i18n
        self._default = default_language
        self._edit_interval = timedelta(seconds=edit_interval_s)
        self._recent = recent_jobs if recent_jobs is not None else RecentJobs()
        self._mail_committed = mail_committed

    @contextmanager
    def _speaking(self, language: str | None) -> Iterator[None]:
        with self._i18n.context(), self._i18n.use_locale(language or self._default):
            yield

    def _mailbox(self, uow: UnitOfWork) -> Mailbox:
        """The mailbox in `uow`'s transaction; the sender looks as soon as it committed."""
        uow.after_commit(self._mail_committed)
        return Mailbox(uow.execute)

    @staticmethod
    def _status(
        job: JobView, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> dict[str, Any]:
        return {"message_id": job.status_message_id, "text": text, "markup": markup_payload(markup)}

    # --- job events: what each changes and says (pure), then the one path that applies it

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

    def on_held(self, job: JobView, event: JobHeld) -> Change | None:
        """Paid, but its workflow's queue is paused by the operators: it waits, and says why."""
        if job.state.phase in domain.FINISHED:
            return None
        with self._speaking(job.language):
            text = texts.held(job.title)
            markup = keyboards.cancel_job(job.request_id.hex)
        return Change(job.state, self._status(job, text, markup))

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
        """The result photo, once per job whatever the duplicates; the status says done. Its
        key is kept on the job, so the result can be sent again (see `results`)."""
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
            move.to,
            status,
            final=True,
            mail=Mail(f"result:{event.job_id}", "photo", photo),
            result_key=event.result_key,
        )

    def on_rejected(self, job: JobView, event: JobRequestRejected) -> Change | None:
        """Jobs refused: say why; nothing was charged. A price that changed since the user
        confirmed it is shown with a button to see the request at the new price, even over
        the plainer v1 copy of this refusal, should that have come first."""
        repriced = event.reason is JobRejectReason.price_changed
        with self._speaking(job.language):
            text = texts.rejected(job.title, event.reason, event.price)
            markup = keyboards.result(job.request_id.hex, made=False) if repriced else None
        change = self._end(job, Phase.rejected, text, markup)
        if change is None and repriced and job.state.phase == Phase.rejected:
            change = Change(job.state, self._status(job, text, markup), final=True)
        return change

    def on_rejected_v1(self, job: JobView, event: JobRequestRejectedV1) -> Change | None:
        with self._speaking(job.language):
            text = texts.rejected(job.title, event.reason)
        return self._end(job, Phase.rejected, text)

    def on_failed(self, job: JobView, event: JobFailed) -> Change | None:
        with self._speaking(job.language):
            if event.reason == screening.MODERATION_REFUSED:
                text = screening.result_refused(job.title, job.price)
            else:
                text = texts.failed(job.title, job.price)
        return self._end(job, Phase.failed, text)

    def on_canceled(self, job: JobView, event: JobCanceled) -> Change | None:
        with self._speaking(job.language):
            text = texts.canceled(job.title)
        return self._end(job, Phase.canceled, text)

    def on_debit_rejected(self, job: JobView, event: DebitRejected) -> Change | None:
        """Not enough credits: the shortfall, and a way to top up."""
        with self._speaking(job.language):
            text = texts.insufficient(job.title, event.price, event.balance, event.shortfall)
            markup = keyboards.topup()
        return self._end(job, Phase.rejected, text, markup)

    def _end(
        self, job: JobView, end: Phase, text: str, markup: InlineKeyboardMarkup | None = None
    ) -> Change | None:
        """The job ends in `end`, unless it already has: the final text goes out at once."""
        move = domain.moved_to(job.state, end)
        return Change(move.to, self._status(job, text, markup), final=True) if move else None

    async def job_created(self, event: JobCreated, uow: UnitOfWork) -> None:
        """Link the job to the request; the price is known from now on."""
        found = await self._move(
            uow,
            lambda job: self.on_created(job, event),
            request_id=event.request_id,
            link=(event.job_id, event.price),
            guess=JobState(Phase.requested),  # as a rule nothing else happened yet
        )
        if not found:
            log.warning("JobCreated for request %s the gateway never made", event.request_id)

    async def job_retried(self, event: JobRetried, uow: UnitOfWork) -> None:
        """An operator's retry of a failed job: a job its user did not ask for here. From now
        on the gateway follows it like one they did (its row, in their private chat, linked
        and priced: free), and tells them support restarted their request at no charge; the
        job's next event opens its status message. The request's title and inputs are the
        failed one's, so *again* works on the result as on any."""
        failed = await Jobs(uow.read).request_of_job(event.retried_job_id)
        user = await Users(uow.read).by_telegram_id(event.telegram_id)
        language = user.language if user else event.language
        with self._speaking(language):
            title = failed.title if failed else texts.retried_title()
            notice = Mail(f"retried:{event.job_id}", "text", {"text": texts.retried(title)})
        images = failed.image_keys if failed else ()
        job = {
            "request_id": event.request_id,
            "job_id": event.job_id,
            "telegram_id": event.telegram_id,
            "user_id": event.user_id,
            "chat_id": event.telegram_id,  # the user's private chat
            "language": language,
            "preset_id": failed.preset_id if failed else event.preset_id,
            "title": title,
            "prompt": failed.prompt if failed else None,
            "image_key": images[0] if images else None,
            "extra_image_keys": list(images[1:]) or None,
            "phase": str(Phase.created),
            "price": 0,
        }
        uow.after_commit(self._mail_committed)
        if await uow.apply(*followed_statement(job, notice)) is None:
            log.info("retry %s is followed here already", event.request_id)

    async def request_rejected(self, event: JobRequestRejected, uow: UnitOfWork) -> None:
        await self._move(uow, lambda job: self.on_rejected(job, event), request_id=event.request_id)

    async def request_rejected_v1(self, event: JobRequestRejectedV1, uow: UnitOfWork) -> None:
        """The same refusal in v1, published beside v2: whichever comes first ends the job.
        Acting on it too means a refusal from jobs before v2 (or whose v2 copy another
        replica, older than v2, dead-lettered) still reaches the user."""
        await self._move(
            uow, lambda job: self.on_rejected_v1(job, event), request_id=event.request_id
        )

    async def queued(self, event: JobQueued, uow: UnitOfWork) -> None:
        await self._job_event(uow, event.job_id, lambda job: self.on_queued(job, event))

    async def held(self, event: JobHeld, uow: UnitOfWork) -> None:
        await self._job_event(
            uow, event.job_id, lambda job: self.on_held(job, event), required=False
        )

    async def started(self, event: JobStarted, uow: UnitOfWork) -> None:
        await self._job_event(
            uow, event.job_id, lambda job: self.on_started(job, event), required=False
        )

    async def progress(self, event: JobProgress, uow: UnitOfWork) -> None:
        await self._job_event(
            uow, event.job_id, lambda job: self.on_progress(job, event), required=False
        )

    async def succeeded(self, event: JobSucceeded, uow: UnitOfWork) -> None:
        # Jobs' decision, not the runner's report: a late JobCompleted for a job already
        # canceled or failed (and refunded) must not hand the user the photo as well.
        await self._job_event(uow, event.job_id, lambda job: self.on_succeeded(job, event))

    async def failed(self, event: JobFailed, uow: UnitOfWork) -> None:
        await self._job_event(uow, event.job_id, lambda job: self.on_failed(job, event))

    async def canceled(self, event: JobCanceled, uow: UnitOfWork) -> None:
        await self._job_event(uow, event.job_id, lambda job: self.on_canceled(job, event))

    async def debit_rejected(self, event: DebitRejected, uow: UnitOfWork) -> None:
        await self._job_event(uow, event.job_id, lambda job: self.on_debit_rejected(job, event))

    async def _job_event(
        self, uow: UnitOfWork, job_id: int, decide: Decide, *, required: bool = True
    ) -> None:
        """An event naming the job by its id; `required`: one about a job unknown here (by
        its id and by its request) comes back later, else it is dropped."""
        if not await self._move(uow, decide, job_id=job_id, request_id=request_of(uow.cause)):
            if required:
                raise JobNotLinkedYetError(f"job {job_id} is not linked to a request yet")
            log.info("%s names job %s, unknown here; dropped", _type_of(uow), job_id)

    async def _move(
        self,
        uow: UnitOfWork,
        decide: Decide,
        *,
        job_id: int | None = None,
        request_id: uuid.UUID | None = None,
        link: tuple[int, int | None] | None = None,
        guess: JobState | None = None,
    ) -> bool:
        """Decide on the job as remembered, else as `guess`ed, else as read; apply the move
        while the job is still as decided on, or read it and decide again. False when there is
        no such job (nothing written); a decision of nothing writes nothing either, and the
        consumer's commit marks the event handled."""
        job = self._remembered(job_id, request_id)
        worded = job is not None  # a guess has no title or language to word a text with
        if job is None and guess is not None and request_id is not None:
            job = JobView(request_id, 0, "", "", None, None, guess)
        woken = False
        for _ in range(TRIES):
            if job is None:
                job = await Jobs(uow.read).view(job_id=job_id, request_id=request_id)
                if job is None:
                    return False
                worded = True
            change = decide(job)
            if change is None:
                return True  # as decided on facts that only move forward: it stays nothing
            if change.says_something and not worded:
                job = None
                continue
            linking = link
            if linking is None and job_id is not None and job.job_id is None:
                linking = (job_id, None)  # linked by this event; JobCreated brings the price
            if linking is not None and job.job_id not in (None, linking[0]):
                log.warning(
                    "request %s has job %s, not %s: never relinked",
                    job.request_id,
                    job.job_id,
                    linking[0],
                )
                return False
            if change.says_something and not woken:
                uow.after_commit(self._mail_committed)
                woken = True
            statement = move_statement(job, change, link=linking, edit_interval=self._edit_interval)
            if await uow.apply(*statement) is not None:
                if worded:  # a guess is no memory: the next event reads the job
                    self._recent.moved(job, change.to, link=linking)
                return True
            job = None  # it moved meanwhile: read it, decide again
        raise RuntimeError(f"job {job_id or request_id} kept moving under its events")

    def _remembered(self, job_id: int | None, request_id: uuid.UUID | None) -> JobView | None:
        if request_id is None:
            return None
        job = self._recent.get(request_id)
        if job is not None and job_id is not None and job.job_id not in (None, job_id):
            return None  # a job other than this event's: read the row
        return job

    # --- credits and payments: several statements in the unit's transaction

    async def refunded(self, event: BalanceRefunded, uow: UnitOfWork) -> None:
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.refunded(event.amount, event.balance)
        await self._credit(uow, event.telegram_id, "refund", event.amount, event.balance)
        await self._mailbox(uow).send(f"refund:{event.job_id}", chat_id, "text", {"text": text})

    async def payment_created(self, event: PaymentCreated, uow: UnitOfWork) -> None:
        """The payment button."""
        user = await Users(uow.read).by_user_id(event.user_id)
        with self._speaking(user.language if user else None):
            text = texts.payment_link(event.credits, rubles(event.amount_kopecks))
            markup = keyboards.pay(str(event.confirmation_url), event.amount_kopecks)
        payload = {"text": text, "markup": markup_payload(markup)}
        await self._mailbox(uow).send(f"payment:{event.payment_id}", event.chat_id, "text", payload)

    async def payment_succeeded(self, event: PaymentSucceeded, uow: UnitOfWork) -> None:
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.payment_received(event.credits, event.balance)
        await self._credit(uow, event.telegram_id, "topup", event.credits, event.balance)
        key = f"paid:{event.payment_id}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def payment_failed(self, event: PaymentFailed, uow: UnitOfWork) -> None:
        """Nothing was charged; a top-up that needs a receipt contact asks for one (a button
        that takes it and requests the top-up again)."""
        language, chat_id = await self._addressee(uow, event.telegram_id)
        payload: dict[str, Any]
        with self._speaking(language):
            if event.reason == RECEIPT_CONTACT_MISSING:
                markup = markup_payload(keyboards.receipt_contact())
                payload = {"text": texts.receipt_missing(), "markup": markup}
            else:
                payload = {"text": texts.payment_failed()}
        key = f"payment_failed:{event.payment_id or event.request_id}"
        await self._mailbox(uow).send(key, chat_id, "text", payload)

    async def weekly_bonus(self, event: WeeklyBonusGranted, uow: UnitOfWork) -> None:
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.weekly_bonus(event.amount, event.balance)
        await self._credit(uow, event.telegram_id, "bonus", event.amount, event.balance)
        key = f"bonus:{event.telegram_id}:{event.week}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def credits_granted(self, event: CreditsGranted, uow: UnitOfWork) -> None:
        """The user hears of the gift, the admin that it landed; each once per grant."""
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.credits_granted(event.credits, event.balance)
        admin_language, admin_chat_id = await self._addressee(uow, event.admin_telegram_id)
        with self._speaking(admin_language):
            done = texts.grant_done(event.telegram_id, event.credits, event.balance)
        await self._credit(uow, event.telegram_id, "grant", event.credits, event.balance)
        mailbox = self._mailbox(uow)
        await mailbox.send(f"grant:{event.request_id}", chat_id, "text", {"text": text})
        await mailbox.send(f"granted:{event.request_id}", admin_chat_id, "text", {"text": done})

    async def grant_refused(self, event: CreditsGrantRefused, uow: UnitOfWork) -> None:
        language, chat_id = await self._addressee(uow, event.admin_telegram_id)
        with self._speaking(language):
            text = texts.grant_refused_unknown(event.telegram_id, event.credits)
        key = f"grant_refused:{event.request_id}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def topup_refunded(self, event: TopUpRefunded, uow: UnitOfWork) -> None:
        """A top-up refunded to the buyer (an operator's refund, YooKassa or Stars)."""
        language, chat_id = await self._addressee(uow, event.telegram_id)
        stars = event.currency == STARS_CURRENCY
        money = f"{event.amount} ⭐" if stars else f"{rubles(event.amount)} ₽"
        with self._speaking(language):
            text = texts.topup_refunded(money, event.credits, event.shortfall, event.balance)
        await self._credit(uow, event.telegram_id, "topup_refund", -event.credits, event.balance)
        key = f"topup_refunded:{event.refund_payment_id}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def credits_adjusted(self, event: CreditsAdjusted, uow: UnitOfWork) -> None:
        """An operator added credits or took some away (the backend API)."""
        language, chat_id = await self._addressee(uow, event.telegram_id)
        with self._speaking(language):
            text = texts.credits_adjusted(event.credits, event.balance)
        await self._credit(uow, event.telegram_id, "adjustment", event.credits, event.balance)
        key = f"adjusted:{event.request_id}"
        await self._mailbox(uow).send(key, chat_id, "text", {"text": text})

    async def _credit(
        self, uow: UnitOfWork, telegram_id: int, kind: str, credits: int, balance: Decimal | int
    ) -> None:
        assert uow.cause is not None
        if OLDER_COPY.get():
            return  # /history lists the credit from its v2 copy, once
        await Credits(uow.execute).record(uow.cause.id, telegram_id, kind, credits, balance)

    async def _addressee(self, uow: UnitOfWork, telegram_id: int) -> tuple[str | None, int]:
        """A user's language and private chat (its id is the user's Telegram id)."""
        user = await Users(uow.read).by_telegram_id(telegram_id)
        return (user.language, user.chat_id) if user else (None, telegram_id)


def request_of(envelope: Envelope[Any] | None) -> uuid.UUID | None:
    """The request a job event is about: its correlation id, when that is a request id."""
    if envelope is None:
        return None
    try:
        return uuid.UUID(envelope.correlation_id)
    except ValueError:
        return None


def _type_of(uow: UnitOfWork) -> str:
    return uow.cause.type if uow.cause is not None else "an event"
