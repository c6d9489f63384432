"""Use cases started by a user in the chat: each one unit of work, the events it causes in
the gateway's outbox, the messages it causes in the mailbox. They answer with views (see
`domain`), never with rows of the ORM."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiogram.types import InlineKeyboardMarkup

from bot_gateway import receipt_contacts, texts
from bot_gateway.domain import (
    FINISHED,
    CreditView,
    GrantOrder,
    JobState,
    JobView,
    KnownUser,
    Phase,
    RequestView,
)
from bot_gateway.receipt_contacts import ReceiptContacts
from bot_gateway.recent_jobs import RecentJobs
from bot_gateway.repository import (
    Credits,
    Jobs,
    Mailbox,
    Statement,
    Users,
    broadcast_statement,
    remember_statement,
    request_statement,
)
from bot_gateway.sender import markup_payload
from bot_gateway.snapshot import UpdateSnapshot
from contracts.events import (
    CreditsGrantRequested,
    JobCancelRequested,
    JobRequested,
    StarsPaymentReceived,
    TopUpRequested,
)
from messaging.unit_of_work import UnitOfWork

REQUESTS = uuid.UUID("5b0f3c1e-8f9a-4c2e-9a57-2f4d7c1b9e60")
"""Namespace of the request ids derived from what the user tapped (uuid5)."""


def job_request_id(customer: Customer, draft: str) -> uuid.UUID:
    """The request a Start on draft `draft` makes: the same for every tap of that button."""
    return uuid.uuid5(REQUESTS, f"job:{customer.telegram_id}:{draft}")


@dataclass(frozen=True)
class Customer:
    """Who is talking: their Telegram id, billing's account id, their chat and language."""

    telegram_id: int
    user_id: int
    chat_id: int
    language: str
    blocked: bool = False
    """They blocked the bot and have not come back since (see `KnownUser.blocked`)."""


@dataclass(frozen=True)
class Draft:
    """What the user has chosen so far (kept in the FSM data between messages)."""

    draft: str
    title: str
    price: int
    preset_id: int | None = None
    prompt: str | None = None
    image_keys: tuple[str, ...] = ()
    """The photos to edit, in the order sent: one, an album's two or three, or none."""
    held: dict[str, Any] | None = None
    """The verdict (`category`, `scores`) that holds these photos for an operator: Start
    puts the request in the moderation queue instead of requesting the job."""

    def as_data(self) -> dict[str, Any]:
        return {
            "draft": self.draft,
            "title": self.title,
            "price": self.price,
            "preset_id": self.preset_id,
            "prompt": self.prompt,
            "image_keys": list(self.image_keys),
            "held": self.held,
        }

    @classmethod
    def of_data(cls, data: dict[str, Any]) -> Draft:
        """A draft from `as_data` (or as the release before kept it: one `image_key`)."""
        data = dict(data)
        single = data.pop("image_key", None)
        keys = data.pop("image_keys", None)
        if keys is None:
            keys = [single] if single else []
        return cls(**data, image_keys=tuple(keys))


def job_request(
    customer: Customer, draft: Draft, status_message_id: int, request_id: uuid.UUID
) -> tuple[JobRequested, Statement, JobView]:
    """What requesting `draft` emits and writes: JobRequested, the request's row with its
    status message's first text (one statement, nothing if the row exists), and its view.
    Speaks the current locale (the status text)."""
    title = draft.title[:200]
    job = {
        "request_id": request_id,
        "telegram_id": customer.telegram_id,
        "user_id": customer.user_id,
        "chat_id": customer.chat_id,
        "language": customer.language,
        "preset_id": draft.preset_id,
        "title": title,
        "prompt": draft.prompt,
        "image_key": draft.image_keys[0] if draft.image_keys else None,
        "extra_image_keys": list(draft.image_keys[1:]) or None,
        "phase": str(Phase.requested),
        "price": draft.price,
        "status_message_id": status_message_id,
    }
    status = {"message_id": status_message_id, "text": texts.accepted(draft.title)}
    requested = JobRequested(
        request_id=request_id,
        user_id=customer.user_id,
        telegram_id=customer.telegram_id,
        chat_id=customer.chat_id,
        preset_id=draft.preset_id,
        prompt=draft.prompt,
        image_keys=list(draft.image_keys),
        language=customer.language,
        price=draft.price,  # as confirmed: jobs refuses the request if the price moved
    )
    view = JobView(
        request_id,
        customer.chat_id,
        customer.language,
        title,
        draft.price,
        status_message_id,
        JobState(Phase.requested),
    )
    return requested, request_statement(job, status), view


class CancelOutcome(Enum):
    requested = "requested"
    too_early = "too_early"
    finished = "finished"
    not_found = "not_found"


class Conversation:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        *,
        mail_committed: Callable[[], None] = lambda: None,
        recent_jobs: RecentJobs | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._mail_committed = mail_committed
        self._recent_jobs = recent_jobs if recent_jobs is not None else RecentJobs()

    async def remember(
        self, customer: Customer, username: str | None, snapshot: UpdateSnapshot | None = None
    ) -> None:
        """Who the user is, from now on (in the update's `snapshot` too)."""
        async with self._unit_of_work() as uow:
            await uow.apply(
                *remember_statement(
                    telegram_id=customer.telegram_id,
                    user_id=customer.user_id,
                    chat_id=customer.chat_id,
                    language=customer.language,
                    username=username,
                )
            )
        if snapshot is not None:
            was = snapshot.users.get(customer.telegram_id)
            snapshot.users[customer.telegram_id] = KnownUser(
                customer.user_id,
                customer.chat_id,
                customer.language,
                chosen_language=was.chosen_language if was else None,
            )

    async def choose_language(self, customer: Customer, language: str) -> None:
        """The user's pick from the menu: every later message speaks it, whatever language
        Telegram says they use."""
        async with self._unit_of_work() as uow:
            await Users(uow.execute).choose_language(customer.telegram_id, language)
            await uow.commit()

    async def came_from(self, customer: Customer, source: str) -> None:
        """The campaign or referral a /start link named; the first one recorded stays."""
        async with self._unit_of_work() as uow:
            await Users(uow.execute).record_source(customer.telegram_id, source)
            await uow.commit()

    async def blocked_by(self, chat_id: int) -> None:
        """The user blocked the bot: broadcasts skip their chat until they come back."""
        async with self._unit_of_work() as uow:
            await Users(uow.execute).mark_blocked(chat_id)
            await uow.commit()

    async def back(self, telegram_id: int, username: str | None) -> None:
        """The user unblocked the bot (or restarted it): reachable again, if ever known."""
        customer = await self.known(telegram_id)
        if customer is not None:
            await self.remember(customer, username)

    async def known(
        self, telegram_id: int, snapshot: UpdateSnapshot | None = None
    ) -> Customer | None:
        """The user as the gateway remembers them (within an update, as its `snapshot` found
        them)."""
        if snapshot is not None and telegram_id in snapshot.users:
            found = snapshot.users[telegram_id]
        else:
            async with self._unit_of_work() as uow:
                found = await Users(uow.read).by_telegram_id(telegram_id)
        if found is None:
            return None
        return Customer(telegram_id, found.user_id, found.chat_id, found.language, found.blocked)

    async def request_job(
        self, customer: Customer, draft: Draft, status_message_id: int
    ) -> uuid.UUID:
        """JobRequested, and the status message says it was accepted; once per draft, in one
        statement with the request's row.

        The request id derives from the draft, so a double-tapped Start (two updates handled
        at once) asks for one job: the second finds it here, and jobs deduplicates on the id.
        """
        requested, statement, view = job_request(
            customer, draft, status_message_id, job_request_id(customer, draft.draft)
        )
        request_id = requested.request_id
        async with self._unit_of_work() as uow:
            uow.emit(requested, correlation_id=str(request_id))
            # the job's events find it remembered, with no read
            uow.after_commit(lambda: self._recent_jobs.moved(view, view.state))
            uow.after_commit(self._mail_committed)
            # the row, JobRequested and the first text in one statement; none if it was made
            await uow.apply(*statement)
        return request_id

    async def job_of(self, customer: Customer, request_id: uuid.UUID) -> RequestView | None:
        """The user's own request; someone else's (a forged button) is None."""
        async with self._unit_of_work() as uow:
            job = await Jobs(uow.read).request(request_id)
        return job if job is not None and job.telegram_id == customer.telegram_id else None

    async def cancel(self, customer: Customer, request_id: uuid.UUID) -> CancelOutcome:
        """JobCancelRequested for one of the user's own unfinished jobs (jobs decides)."""
        async with self._unit_of_work() as uow:
            job = await Jobs(uow.read).request(request_id)
            if job is None or job.telegram_id != customer.telegram_id:
                return CancelOutcome.not_found
            if Phase(job.phase) in FINISHED:
                return CancelOutcome.finished
            if job.job_id is None:
                return CancelOutcome.too_early
            uow.emit(
                JobCancelRequested(
                    job_id=job.job_id, user_id=customer.user_id, chat_id=customer.chat_id
                ),
                correlation_id=str(request_id),
            )
            await uow.commit()
        return CancelOutcome.requested

    async def active_jobs(self, customer: Customer) -> list[RequestView]:
        async with self._unit_of_work() as uow:
            return await Jobs(uow.read).unfinished_of(customer.telegram_id)

    async def request_topup(
        self,
        customer: Customer,
        package_id: str,
        offer_message_id: int,
        receipt_contact: str | None = None,
    ) -> None:
        """TopUpRequested; once per package per offer message (and receipt contact), however
        often it is tapped; in the user's language (the payment's description), with the
        receipt's email or phone when the shop sends receipts.

        Billing keeps one payment per request id, so repeated taps get the same payment.
        """
        request_id = uuid.uuid5(
            REQUESTS,
            f"topup:{customer.telegram_id}:{offer_message_id}:{package_id}"
            + (f":{receipt_contact}" if receipt_contact else ""),
        )
        email, phone = receipt_contacts.split(receipt_contact)
        async with self._unit_of_work() as uow:
            uow.emit(
                TopUpRequested(
                    request_id=request_id,
                    user_id=customer.user_id,
                    telegram_id=customer.telegram_id,
                    chat_id=customer.chat_id,
                    package_id=package_id,
                    language=customer.language,
                    email=email,
                    phone=phone,
                ),
                correlation_id=str(request_id),  # every event of the top-up reads as one story
            )
            await uow.commit()

    async def receipt_contact(self, customer: Customer) -> str | None:
        """Where the user's 54-FZ receipts go (`receipt_contacts.parse`'s form), if they said."""
        return await ReceiptContacts(self._unit_of_work).of(customer.telegram_id)

    async def remember_receipt_contact(self, customer: Customer, contact: str) -> None:
        await ReceiptContacts(self._unit_of_work).remember(customer.telegram_id, contact)

    async def stars_paid(
        self, customer: Customer, charge_id: str, package_id: str, stars: int, credits: int
    ) -> None:
        """StarsPaymentReceived for a `successful_payment`: Telegram has taken the Stars, so
        it is reported whatever the package list says now; billing credits each charge once."""
        async with self._unit_of_work() as uow:
            uow.emit(
                StarsPaymentReceived(
                    telegram_payment_charge_id=charge_id,
                    user_id=customer.user_id,
                    telegram_id=customer.telegram_id,
                    chat_id=customer.chat_id,
                    package_id=package_id,
                    amount=stars,
                    credits=credits,
                ),
                correlation_id=charge_id,
            )
            await uow.commit()

    async def credits(self, customer: Customer, limit: int) -> list[CreditView]:
        async with self._unit_of_work() as uow:
            return await Credits(uow.read).recent(customer.telegram_id, limit)

    async def titles(self, job_ids: list[int]) -> dict[int, str]:
        async with self._unit_of_work() as uow:
            return await Jobs(uow.read).titles(job_ids)

    async def broadcast(self, text: str) -> int:
        """One message per reachable chat, through the sender and its limits."""
        async with self._unit_of_work() as uow:
            uow.after_commit(self._mail_committed)
            mailed = await uow.apply(*broadcast_statement(uuid.uuid4().hex, text))
        return int(mailed.mailed) if mailed is not None else 0

    async def point_to_private(
        self, group_chat_id: int, text: str, markup: InlineKeyboardMarkup
    ) -> None:
        """The one message a group ever gets: the bot works in private chats (once per group,
        however many updates ask at once: the mail's key deduplicates)."""
        async with self._unit_of_work() as uow:
            uow.after_commit(self._mail_committed)
            payload = {"text": text, "markup": markup_payload(markup)}
            mailbox = Mailbox(uow.execute)
            await mailbox.send(f"group:{group_chat_id}", group_chat_id, "text", payload)
            await uow.commit()

    async def grant(self, admin_telegram_id: int, order: GrantOrder) -> uuid.UUID:
        """CreditsGrantRequested: billing credits it once, through its ledger."""
        request_id = uuid.uuid4()
        async with self._unit_of_work() as uow:
            uow.emit(
                CreditsGrantRequested(
                    request_id=request_id,
                    admin_telegram_id=admin_telegram_id,
                    telegram_id=order.telegram_id,
                    credits=order.credits,
                    reason=order.reason,
                ),
                correlation_id=str(request_id),
            )
            await uow.commit()
        return request_id

    async def stats(self) -> tuple[int, int, int, int]:
        async with self._unit_of_work() as uow:
            users = await Users(uow.read).count()
            today, active = await Jobs(uow.read).stats()
            pending = await Mailbox(uow.read).pending()
        return users, today, active, pending
