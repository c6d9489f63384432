"""Use cases started by a user in the chat: each one unit of work, the events it causes in
the gateway's outbox, the messages it causes in the mailbox."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from bot_gateway import texts
from bot_gateway.domain import FINISHED, GrantOrder, JobState, JobView, Phase
from bot_gateway.models import GatewayCredit, GatewayJob
from bot_gateway.recent_jobs import RecentJobs
from bot_gateway.repository import Credits, Jobs, Mailbox, Users, request_at_once
from bot_gateway.snapshot import KnownUser, current_snapshot
from contracts.envelope import new_envelope
from contracts.events import CreditsGrantRequested, JobCancelRequested, JobRequested, TopUpRequested
from messaging.runtime import ServiceRuntime

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


@dataclass(frozen=True)
class Draft:
    """What the user has chosen so far (kept in the FSM data between messages)."""

    draft: str
    title: str
    price: int
    preset_id: int | None = None
    prompt: str | None = None
    image_key: str | None = None

    def as_data(self) -> dict[str, Any]:
        return {
            "draft": self.draft,
            "title": self.title,
            "price": self.price,
            "preset_id": self.preset_id,
            "prompt": self.prompt,
            "image_key": self.image_key,
        }


class CancelOutcome(Enum):
    requested = "requested"
    too_early = "too_early"
    finished = "finished"
    not_found = "not_found"


class Conversation:
    def __init__(
        self,
        runtime: ServiceRuntime,
        *,
        edit_interval_s: float,
        mail_committed: Callable[[], None] = lambda: None,
        recent_jobs: RecentJobs | None = None,
    ) -> None:
        self._runtime = runtime
        self._edit_interval_s = edit_interval_s
        self._mail_committed = mail_committed
        self._recent_jobs = recent_jobs if recent_jobs is not None else RecentJobs()

    async def remember(self, customer: Customer, username: str | None) -> None:
        async with self._runtime.unit_of_work() as uow:
            await Users(uow.session).remember(
                telegram_id=customer.telegram_id,
                user_id=customer.user_id,
                chat_id=customer.chat_id,
                language=customer.language,
                username=username,
            )
            await uow.commit()
        if (snapshot := current_snapshot()) is not None:
            snapshot.users[customer.telegram_id] = KnownUser(
                customer.user_id, customer.chat_id, customer.language
            )

    async def known(self, telegram_id: int) -> Customer | None:
        """The user as the gateway remembers them (within an update, as the update found them)."""
        snapshot = current_snapshot()
        if snapshot is not None and telegram_id in snapshot.users:
            found = snapshot.users[telegram_id]
            if found is None:
                return None
            return Customer(telegram_id, found.user_id, found.chat_id, found.language)
        async with self._runtime.unit_of_work() as uow:
            user = await Users(uow.session).by_telegram_id(telegram_id)
            uow.session.expunge_all()  # read-only: keep what was loaded past the rollback
        if user is None:
            return None
        return Customer(user.telegram_id, user.user_id, user.chat_id, user.language)

    async def request_job(
        self, customer: Customer, draft: Draft, status_message_id: int
    ) -> uuid.UUID:
        """JobRequested, and the status message says it was accepted; once per draft, in one
        statement with the request's row.

        The request id derives from the draft, so a double-tapped Start (two updates handled
        at once) asks for one job: the second finds it here, and jobs deduplicates on the id.
        """
        request_id = job_request_id(customer, draft.draft)
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
            "image_key": draft.image_key,
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
            image_key=draft.image_key,
            language=customer.language,
            price=draft.price,  # as confirmed: jobs refuses the request if the price moved
        )
        envelope = new_envelope(
            requested, source=self._runtime.name, correlation_id=str(request_id)
        )
        announce = (requested.routing_key(), envelope)
        # One autocommitted statement (no BEGIN, outbox INSERT, COMMIT round trips): the tap
        # that starts every job is the gateway's hottest path.
        async with self._runtime.autocommit.connect() as connection:
            if not await request_at_once(connection, job, status, announce):
                return request_id
        self._recent_jobs.moved(  # the job's events find it here, with no read
            JobView(
                request_id,
                customer.chat_id,
                customer.language,
                title,
                draft.price,
                status_message_id,
                JobState(Phase.requested),
            ),
            JobState(Phase.requested),
        )
        self._runtime.relay.committed([announce])
        self._mail_committed()
        return request_id

    async def job_of(self, customer: Customer, request_id: uuid.UUID) -> GatewayJob | None:
        """The user's own job; someone else's (a forged button) is None."""
        async with self._runtime.unit_of_work() as uow:
            job = await Jobs(uow.session).by_request(request_id)
            uow.session.expunge_all()
        return job if job is not None and job.telegram_id == customer.telegram_id else None

    async def cancel(self, customer: Customer, request_id: uuid.UUID) -> CancelOutcome:
        """JobCancelRequested for one of the user's own unfinished jobs."""
        async with self._runtime.unit_of_work() as uow:
            job = await Jobs(uow.session).by_request(request_id, lock=True)
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

    async def active_jobs(self, customer: Customer) -> list[GatewayJob]:
        async with self._runtime.unit_of_work() as uow:
            jobs = await Jobs(uow.session).active_of(customer.telegram_id)
            uow.session.expunge_all()
        return jobs

    async def request_topup(
        self, customer: Customer, package_id: str, offer_message_id: int
    ) -> None:
        """TopUpRequested; once per package per offer message, however often it is tapped.

        Billing keeps one payment per request id, so repeated taps get the same payment.
        """
        async with self._runtime.unit_of_work() as uow:
            uow.emit(
                TopUpRequested(
                    request_id=uuid.uuid5(
                        REQUESTS, f"topup:{customer.telegram_id}:{offer_message_id}:{package_id}"
                    ),
                    user_id=customer.user_id,
                    telegram_id=customer.telegram_id,
                    chat_id=customer.chat_id,
                    package_id=package_id,
                )
            )
            await uow.commit()

    async def credits(self, customer: Customer, limit: int) -> list[GatewayCredit]:
        async with self._runtime.unit_of_work() as uow:
            credits = await Credits(uow.session).recent(customer.telegram_id, limit)
            uow.session.expunge_all()
        return credits

    async def titles(self, job_ids: list[int]) -> dict[int, str]:
        async with self._runtime.unit_of_work() as uow:
            return await Jobs(uow.session).titles(job_ids)

    async def broadcast(self, text: str) -> int:
        """One message per reachable chat, through the sender and its limits."""
        broadcast_id = uuid.uuid4().hex
        async with self._runtime.unit_of_work() as uow:
            chats = await Users(uow.session).reachable_chats()
            mailbox = Mailbox(uow.session, edit_interval_s=self._edit_interval_s)
            for chat_id in chats:
                await mailbox.send(
                    f"broadcast:{broadcast_id}:{chat_id}", chat_id, "text", {"text": text}
                )
            await uow.commit()
        self._mail_committed()
        return len(chats)

    async def grant(self, admin_telegram_id: int, order: GrantOrder) -> uuid.UUID:
        """CreditsGrantRequested: billing credits it once, through its ledger."""
        request_id = uuid.uuid4()
        async with self._runtime.unit_of_work() as uow:
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
        async with self._runtime.unit_of_work() as uow:
            users = await Users(uow.session).count()
            today, active = await Jobs(uow.session).stats()
            pending = await Mailbox(uow.session, edit_interval_s=0).pending()
        return users, today, active, pending
