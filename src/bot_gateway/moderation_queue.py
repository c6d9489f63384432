"""The moderation queue, owned by the gateway: a request whose photo scored between the hold
and the refuse thresholds is not requested when the user taps Start; it waits here, as they
asked for it (at the price they were shown), until an operator decides. Approved, its job is
requested exactly as a Start would have (the same request id); rejected, the user is told and
nothing was ever charged. Every step is in the moderation's audit log and announced
(ModerationHeld, ModerationDecided).

Operators decide in the CLI (`imagebot moderation queue|approve|reject`) or through the backend
API, whose command (ModerationDecisionRequested) is applied here once, with its inbox mark.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from PIL import Image
from sqlalchemy import Select, func, select, update
from sqlalchemy.dialects.postgresql import insert

from bot_gateway.conversation import Customer, Draft, job_request, job_request_id
from bot_gateway.models import HeldRequest, ModerationDecision, UploadFingerprint
from bot_gateway.repository import Mailbox
from bot_gateway.restrictions import Restrictions, public_name
from contracts.events import (
    ModerationDecided,
    ModerationDecisionRefused,
    ModerationDecisionRefusedReason,
    ModerationDecisionRequested,
    ModerationHeld,
    UserRestrictionRefused,
    UserRestrictionRequested,
)
from contracts.rpc import (
    GetHeldPreview,
    GetUserModeration,
    HeldPage,
    HeldPreview,
    HeldRecord,
    ListHeld,
    ModerationLogRecord,
    UserModeration,
)
from messaging.rpc import RpcRefusedError
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork
from object_store import ObjectStore

log = logging.getLogger(__name__)

PREVIEW_SIDE = 640
"""A held photo is shown to operators at most this many pixels a side (JPEG)."""

Outcome = Literal["approved", "rejected", "unknown_item", "already_decided"]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    state: str | None = None
    """The state the item is in now (after the decision, or the one that stood)."""


def held_for_review(title: str) -> str:
    return _(
        "🔎 «{title}»: a moderator checks your photo before the job starts (usually within "
        "a few hours). Nothing has been charged; you will be told the decision here."
    ).format(title=title)


def rejected_by_moderator(title: str) -> str:
    return _(
        "🚫 «{title}»: a moderator checked your photo, and it can't be used: it breaks the "
        "content rules. Nothing was charged. Please send another photo."
    ).format(title=title)


class ModerationQueue:
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        store: ObjectStore,
        i18n: I18n,
        *,
        default_language: str,
        restrictions: Restrictions,
        mail_committed: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._unit_of_work = unit_of_work
        self._store = store
        self._i18n = i18n
        self._default = default_language
        self._restrictions = restrictions
        self._mail_committed = mail_committed
        self._clock = clock

    @contextmanager
    def _speaking(self, language: str | None) -> Iterator[None]:
        with self._i18n.context(), self._i18n.use_locale(language or self._default):
            yield

    # --- the user's side

    async def hold(self, customer: Customer, draft: Draft, status_message_id: int) -> bool:
        """Put the request of `draft` in the queue (once: False when it is there already) and
        tell the user on its status message."""
        request_id = job_request_id(customer, draft.draft)
        held = draft.held or {}
        category = str(held.get("category", ""))[:64]
        scores = {str(label): float(score) for label, score in held.get("scores", {}).items()}
        async with self._unit_of_work() as uow:
            inserted = await uow.execute(
                insert(HeldRequest)
                .values(
                    request_id=request_id,
                    subject="photo",
                    telegram_id=customer.telegram_id,
                    user_id=customer.user_id,
                    chat_id=customer.chat_id,
                    language=customer.language,
                    title=draft.title[:200],
                    price=draft.price,
                    preset_id=draft.preset_id,
                    prompt=draft.prompt,
                    image_keys=list(draft.image_keys),
                    status_message_id=status_message_id,
                    category=category,
                    scores=scores,
                )
                .on_conflict_do_nothing(index_elements=[HeldRequest.request_id])
                .returning(HeldRequest.id)
            )
            item_id = inserted.scalar_one_or_none()
            if item_id is None:
                return False
            await uow.execute(
                insert(ModerationDecision).values(
                    telegram_id=customer.telegram_id,
                    subject="photo",
                    decision="held",
                    category=category,
                    detail=f"queue item {item_id}: "
                    + ", ".join(f"{label}={score:.2f}" for label, score in sorted(scores.items())),
                )
            )
            uow.emit(
                ModerationHeld(
                    item_id=item_id,
                    request_id=request_id,
                    telegram_id=customer.telegram_id,
                    user_id=customer.user_id,
                    subject="photo",
                    category=category,
                    scores=scores,
                ),
                correlation_id=str(request_id),
            )
            with self._speaking(customer.language):
                text = held_for_review(draft.title)
            status = {"message_id": status_message_id, "text": text}
            await Mailbox(uow.execute).send(
                f"status:{request_id}", customer.chat_id, "edit", status
            )
            uow.after_commit(self._mail_committed)
            await uow.commit()
        log.info("request %s of %s held: item %s", request_id, customer.telegram_id, item_id)
        return True

    async def holds(self, request_id: uuid.UUID) -> bool:
        """Whether the request is in the queue (waiting or decided): a Start tapped again."""
        async with self._unit_of_work() as uow:
            found = await uow.read(
                select(HeldRequest.id).where(HeldRequest.request_id == request_id)
            )
            return found.first() is not None

    # --- the operator's side

    async def decide(
        self,
        item_id: int,
        verdict: Literal["approve", "reject"],
        operator: str,
        reason: str,
        *,
        request_id: uuid.UUID | None = None,
        uow: UnitOfWork | None = None,
    ) -> Decision:
        """Approve (the job is requested as the user asked) or reject (they are told) a held
        request, once; in `uow` when given (an operator's command with its inbox mark)."""
        if uow is not None:
            return await self._decide(uow, item_id, verdict, operator, reason, request_id)
        async with self._unit_of_work() as own:
            decision = await self._decide(own, item_id, verdict, operator, reason, request_id)
            await own.commit()
        return decision

    async def _decide(
        self,
        uow: UnitOfWork,
        item_id: int,
        verdict: Literal["approve", "reject"],
        operator: str,
        reason: str,
        request_id: uuid.UUID | None,
    ) -> Decision:
        state = "approved" if verdict == "approve" else "rejected"
        decided = await uow.execute(
            update(HeldRequest)
            .where(HeldRequest.id == item_id, HeldRequest.state == "held")
            .values(state=state, decided_by=operator, reason=reason, decided_at=self._clock())
            .returning(HeldRequest)
        )
        held = decided.first()
        if held is None:
            found = await uow.execute(select(HeldRequest.state).where(HeldRequest.id == item_id))
            standing = found.scalar_one_or_none()
            return Decision("unknown_item" if standing is None else "already_decided", standing)
        await uow.execute(
            insert(ModerationDecision).values(
                telegram_id=held.telegram_id,
                subject=held.subject,
                decision=state,
                category=held.category,
                detail=f"queue item {item_id}: {reason}",
                actor=operator,
            )
        )
        uow.emit(
            ModerationDecided(
                request_id=request_id,
                item_id=item_id,
                job_request_id=held.request_id,
                telegram_id=held.telegram_id,
                user_id=held.user_id,
                subject="photo",
                verdict=state,  # approved or rejected
                category=held.category,
                scores=held.scores,
                decided_by=public_name(operator),
                reason=reason[:500],
            ),
            correlation_id=str(held.request_id),
        )
        uow.after_commit(self._mail_committed)
        with self._speaking(held.language):
            if verdict == "approve":
                await self._request(uow, held)
            else:
                text = rejected_by_moderator(held.title)
                await Mailbox(uow.execute).send(
                    f"moderation:{item_id}:rejected", held.chat_id, "text", {"text": text}
                )
        await uow.commit()
        log.info("held item %s %s by %s: %s", item_id, state, operator, reason)
        return Decision(state, state)  # type: ignore[arg-type]

    async def _request(self, uow: UnitOfWork, held: Any) -> None:
        """JobRequested under the held request's id, its row and status text (as Start)."""
        customer = Customer(held.telegram_id, held.user_id, held.chat_id, held.language)
        draft = Draft(
            draft="",
            title=held.title,
            price=held.price,
            preset_id=held.preset_id,
            prompt=held.prompt,
            image_keys=tuple(held.image_keys),
        )
        requested, (statement, params), _ = job_request(
            customer, draft, held.status_message_id, held.request_id
        )
        await uow.execute(statement, params)
        uow.emit(requested, correlation_id=str(held.request_id))

    # --- reads (the backend API's, and the CLI's)

    async def page(self, request: ListHeld) -> HeldPage:
        query: Select[Any] = select(HeldRequest)
        if request.state is not None:
            query = query.where(HeldRequest.state == request.state)
        if request.telegram_id is not None:
            query = query.where(HeldRequest.telegram_id == request.telegram_id)
        if request.item_id is not None:
            query = query.where(HeldRequest.id == request.item_id)
        order = HeldRequest.id if request.state == "held" else HeldRequest.id.desc()
        async with self._unit_of_work() as uow:
            total = (
                await uow.read(select(func.count()).select_from(query.subquery()))
            ).scalar_one()
            rows = await uow.read(query.order_by(order).offset(request.offset).limit(request.limit))
            items = [_record(row) for row in rows]
        return HeldPage(items=items, total=int(total))

    async def preview(self, request: GetHeldPreview) -> HeldPreview:
        async with self._unit_of_work() as uow:
            keys = (
                await uow.read(
                    select(HeldRequest.image_keys).where(HeldRequest.id == request.item_id)
                )
            ).scalar_one_or_none()
        if keys is None or request.index >= len(keys):
            raise RpcRefusedError("unknown_item", f"item {request.item_id}#{request.index}")
        try:
            data = await self._store.get(keys[request.index])
        except (FileNotFoundError, KeyError) as exc:
            raise RpcRefusedError("gone", "the photo is no longer stored") from exc
        jpeg = await asyncio.to_thread(_preview, data)
        return HeldPreview(content_type="image/jpeg", data_base64=base64.b64encode(jpeg).decode())

    async def user(self, request: GetUserModeration) -> UserModeration:
        telegram_id = request.telegram_id
        found = await self._restrictions.standing(telegram_id)
        decisions = await self._restrictions.log(telegram_id, request.limit)
        mine = select(UploadFingerprint.digest).where(UploadFingerprint.telegram_id == telegram_id)
        shared = (
            select(UploadFingerprint.digest, func.count().label("accounts"))
            .where(UploadFingerprint.digest.in_(mine))
            .group_by(UploadFingerprint.digest)
            .having(func.count() > 1)
            .subquery()
        )
        async with self._unit_of_work() as uow:
            held = (
                await uow.read(
                    select(func.count())
                    .select_from(HeldRequest)
                    .where(HeldRequest.telegram_id == telegram_id, HeldRequest.state == "held")
                )
            ).scalar_one()
            uploads, most = (
                await uow.read(select(func.count(), func.coalesce(func.max(shared.c.accounts), 0)))
            ).one()
        return UserModeration(
            telegram_id=telegram_id,
            standing=found.kind.value,
            reason=found.reason,
            until=found.until,
            decisions=[
                ModerationLogRecord(
                    id=row.id,
                    subject=row.subject,
                    decision=row.decision,
                    category=row.category,
                    detail=row.detail,
                    actor=row.actor,
                    created_at=row.created_at,
                )
                for row in decisions
            ],
            held=int(held),
            shared_uploads=int(uploads),
            most_shared=int(most),
        )


def _record(row: Any) -> HeldRecord:
    return HeldRecord(
        item_id=row.id,
        request_id=str(row.request_id),
        subject=row.subject,
        state=row.state,
        telegram_id=row.telegram_id,
        user_id=row.user_id,
        title=row.title,
        price=row.price,
        prompt=row.prompt,
        images=len(row.image_keys),
        category=row.category,
        scores={str(label): float(score) for label, score in row.scores.items()},
        decided_by=row.decided_by,
        reason=row.reason,
        created_at=row.created_at,
        decided_at=row.decided_at,
    )


def _preview(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB")
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=80)
    return out.getvalue()


def register(runtime: ServiceRuntime, queue: ModerationQueue, restrictions: Restrictions) -> None:
    """The backend API's commands (decisions, bans) and reads, on the gateway's queues."""

    @runtime.consumer.on(ModerationDecisionRequested)
    async def decide(event: ModerationDecisionRequested, uow: UnitOfWork) -> None:
        decision = await queue.decide(
            event.item_id,
            event.verdict,
            event.operator,
            event.reason.strip(),
            request_id=event.request_id,
            uow=uow,
        )
        if decision.outcome in ("unknown_item", "already_decided"):
            uow.emit(  # with the inbox mark, in the consumer's commit
                ModerationDecisionRefused(
                    request_id=event.request_id,
                    operator=event.operator,
                    item_id=event.item_id,
                    verdict=event.verdict,
                    reason=ModerationDecisionRefusedReason(decision.outcome),
                    state=decision.state,
                ),
                correlation_id=str(event.request_id),
            )

    @runtime.consumer.on(UserRestrictionRequested)
    async def restrict(event: UserRestrictionRequested, uow: UnitOfWork) -> None:
        reason = event.reason.strip()
        if event.action == "ban":
            await restrictions.ban(
                event.telegram_id, reason, event.operator, request_id=event.request_id, uow=uow
            )
            return
        lifted = await restrictions.unban(
            event.telegram_id, reason, event.operator, request_id=event.request_id, uow=uow
        )
        if not lifted:
            uow.emit(
                UserRestrictionRefused(
                    request_id=event.request_id,
                    operator=event.operator,
                    telegram_id=event.telegram_id,
                    action="unban",
                    reason="not_restricted",
                ),
                correlation_id=str(event.request_id),
            )

    runtime.serve(ListHeld, queue.page)
    runtime.serve(GetHeldPreview, queue.preview)
    runtime.serve(GetUserModeration, queue.user)
