"""Operators' broadcasts (commands from the backend API): queued once per request id as one
outbound message per chat of the audience, in the sender's lowest lane (`Lane.bulk`), so a
broadcast takes only the slots that replies and job messages leave; counted before sending,
followed while it goes out (the sender marks each row), canceled by dropping what is unsent.

A broadcast's messages are the outbound rows keyed `broadcast:<id hex>:<chat>`; its progress is
read from them (sent, failed for good, left) and from its own row (recipients, dropped). The
audience: users who have not blocked the bot, filtered by language, activity (joined or asked
for an image since a moment) and whether they ever topped up (the gateway records every
PaymentSucceeded it announces, YooKassa's and Stars', as a `topup` credit).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Integer,
    Select,
    String,
    and_,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot_gateway.limits import Lane
from bot_gateway.models import (
    GatewayBroadcast,
    GatewayCredit,
    GatewayUser,
    OutboundMessage,
)
from contracts.events import (
    BroadcastAudience,
    BroadcastCanceled,
    BroadcastCancelRefused,
    BroadcastCancelRequested,
    BroadcastQueued,
    BroadcastRequested,
)
from contracts.rpc import AudienceSize, BroadcastPage, BroadcastView, CountAudience, ListBroadcasts
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

BROADCAST_ROWS = "broadcast:%"
"""Every broadcast row: the partial index's predicate, repeated in each query so it applies."""


def key_prefix(broadcast_id: uuid.UUID) -> str:
    """The outbound keys of a broadcast's messages start with this (then the chat id)."""
    return f"broadcast:{broadcast_id.hex}:"


def audience_chats(audience: BroadcastAudience) -> Select[Any]:
    """The chats a broadcast to `audience` reaches now: users who have not blocked the bot and
    match every filter given."""
    chats = select(GatewayUser.chat_id).where(GatewayUser.blocked.is_(False))
    if audience.languages:
        chats = chats.where(GatewayUser.language.in_(audience.languages))
    if audience.active_since is not None:  # joined or asked for an image since
        chats = chats.where(GatewayUser.active_at >= audience.active_since)
    if audience.paid_ever is not None:
        paid = exists().where(
            GatewayCredit.telegram_id == GatewayUser.telegram_id, GatewayCredit.kind == "topup"
        )
        chats = chats.where(paid if audience.paid_ever else ~paid)
    return chats


def _of_broadcast(broadcast_id: uuid.UUID) -> Any:
    return and_(
        OutboundMessage.key.like(BROADCAST_ROWS),
        OutboundMessage.key.like(key_prefix(broadcast_id) + "%"),
    )


class Broadcasts:
    """The commands (start, cancel) and the reads (audience size, progress)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], mail_committed: Callable[[], None]
    ) -> None:
        self._sessions = sessions
        self._mail_committed = mail_committed

    async def start(self, event: BroadcastRequested, uow: UnitOfWork) -> None:
        """Queue the broadcast once per request id; answer BroadcastQueued."""
        recorded = await uow.execute(
            pg_insert(GatewayBroadcast)
            .values(
                id=event.request_id,
                operator=event.operator,
                text=event.text,
                reason=event.reason,
                audience=event.audience.model_dump(mode="json"),
                recipients=0,
            )
            .on_conflict_do_nothing(index_elements=[GatewayBroadcast.id])
            .returning(GatewayBroadcast.id)
        )
        if recorded.first() is None:
            log.info("broadcast %s was queued already; nothing to do", event.request_id)
            return
        chats = audience_chats(event.audience).subquery()
        rows = select(
            func.concat(literal(key_prefix(event.request_id), String()), chats.c.chat_id),
            chats.c.chat_id,
            literal("text"),
            cast(literal(json.dumps({"text": event.text}), String()), JSONB),
            literal(int(Lane.bulk), Integer()),
        )
        mailed = (
            pg_insert(OutboundMessage)
            .from_select(["key", "chat_id", "kind", "payload", "lane"], rows)
            .on_conflict_do_nothing(index_elements=[OutboundMessage.key])
            .returning(OutboundMessage.id)
            .cte("mailed")
        )
        recipients = int((await uow.execute(select(func.count()).select_from(mailed))).scalar_one())
        await uow.execute(
            sql_update(GatewayBroadcast)
            .where(GatewayBroadcast.id == event.request_id)
            .values(recipients=recipients)
        )
        uow.after_commit(self._mail_committed)
        uow.emit(
            BroadcastQueued(
                request_id=event.request_id, operator=event.operator, recipients=recipients
            ),
            correlation_id=str(event.request_id),
        )
        log.info(
            "operator %s queued broadcast %s for %d chats",
            event.operator,
            event.request_id,
            recipients,
        )

    async def cancel(self, event: BroadcastCancelRequested, uow: UnitOfWork) -> None:
        """Drop the broadcast's messages not sent (nor on their way) yet; answer
        BroadcastCanceled, or BroadcastCancelRefused for an unknown broadcast."""
        known = await uow.execute(
            select(GatewayBroadcast.id)
            .where(GatewayBroadcast.id == event.broadcast_id)
            .with_for_update()
        )
        if known.first() is None:
            uow.emit(
                BroadcastCancelRefused(
                    request_id=event.request_id,
                    operator=event.operator,
                    broadcast_id=event.broadcast_id,
                    reason="unknown_broadcast",
                ),
                correlation_id=str(event.request_id),
            )
            return
        gone = await uow.execute(
            delete(OutboundMessage)
            .where(
                _of_broadcast(event.broadcast_id),
                OutboundMessage.sent_at.is_(None),
                or_(
                    OutboundMessage.leased_until.is_(None),
                    OutboundMessage.leased_until < func.now(),
                ),
            )
            .returning(OutboundMessage.id)
        )
        dropped = len(gone.all())
        await uow.execute(
            sql_update(GatewayBroadcast)
            .where(GatewayBroadcast.id == event.broadcast_id)
            .values(
                dropped=GatewayBroadcast.dropped + dropped,
                canceled_at=func.coalesce(GatewayBroadcast.canceled_at, func.now()),
                canceled_by=func.coalesce(GatewayBroadcast.canceled_by, event.operator),
            )
        )
        uow.emit(
            BroadcastCanceled(
                request_id=event.request_id,
                operator=event.operator,
                broadcast_id=event.broadcast_id,
                dropped=dropped,
            ),
            correlation_id=str(event.request_id),
        )
        log.info(
            "operator %s canceled broadcast %s: %d messages dropped",
            event.operator,
            event.broadcast_id,
            dropped,
        )

    async def count(self, request: CountAudience) -> AudienceSize:
        chats = audience_chats(request.audience).subquery()
        async with self._sessions() as session:
            recipients = await session.scalar(select(func.count()).select_from(chats))
        return AudienceSize(recipients=int(recipients or 0))

    async def list(self, request: ListBroadcasts) -> BroadcastPage:
        query = select(GatewayBroadcast)
        if request.broadcast_id is not None:
            query = query.where(GatewayBroadcast.id == request.broadcast_id)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = (
                await session.scalars(
                    query.order_by(GatewayBroadcast.created_at.desc(), GatewayBroadcast.id)
                    .offset(request.offset)
                    .limit(request.limit)
                )
            ).all()
            views = [await self._view(session, row) for row in rows]
        return BroadcastPage(broadcasts=views, total=int(total or 0))

    async def _view(self, session: AsyncSession, row: GatewayBroadcast) -> BroadcastView:
        done = OutboundMessage.sent_at.is_not(None)
        failed = OutboundMessage.last_error.is_not(None)
        progress = (
            await session.execute(
                select(
                    func.count().filter(done, ~failed),
                    func.count().filter(done, failed),
                    func.count().filter(~done),
                ).where(_of_broadcast(row.id))
            )
        ).one()
        sent, failed_count, left = (int(value) for value in progress)
        return BroadcastView(
            broadcast_id=row.id,
            operator=row.operator,
            text=row.text,
            reason=row.reason,
            audience=BroadcastAudience.model_validate(row.audience),
            recipients=row.recipients,
            sent=sent,
            failed=failed_count,
            left=left,
            dropped=row.dropped,
            created_at=row.created_at,
            canceled_at=row.canceled_at,
        )


def register(runtime: ServiceRuntime, mail_committed: Callable[[], None]) -> None:
    """The backend API's broadcast commands and reads, on the gateway's queues."""
    broadcasts = Broadcasts(runtime.sessions, mail_committed)
    runtime.consumer.on(BroadcastRequested)(broadcasts.start)
    runtime.consumer.on(BroadcastCancelRequested)(broadcasts.cancel)
    runtime.serve(CountAudience, broadcasts.count)
    runtime.serve(ListBroadcasts, broadcasts.list)
