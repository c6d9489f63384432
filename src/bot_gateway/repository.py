"""SQL on the gateway's own tables, in SQLAlchemy Core.

The repositories run their statements through whatever the caller hands them: a unit of
work's `read` (autocommitted outside a transaction) or `execute` (in its transaction), or a
session's `execute`; none commits. Reads give views, never ORM rows. The guarded changes a
unit of work applies (`move_statement`, `request_statement`) are built here too: the job's
move and the user's messages in one statement, no row when the job is not as decided on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Interval,
    Row,
    Select,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.selectable import CTE

from bot_gateway.domain import (
    FINISHED,
    Change,
    CreditView,
    JobState,
    JobView,
    KnownUser,
    RequestView,
)
from bot_gateway.models import GatewayCredit, GatewayJob, GatewayUser, OutboundMessage

Run = Callable[[Executable], Awaitable[Any]]
"""How a repository runs a statement: `uow.read`, `uow.execute` or `session.execute`."""

UNFINISHED = GatewayJob.phase.not_in([str(phase) for phase in FINISHED])


class Users:
    def __init__(self, run: Run) -> None:
        self._run = run

    async def by_telegram_id(self, telegram_id: int) -> KnownUser | None:
        found = await self._run(_USER.where(GatewayUser.telegram_id == telegram_id))
        return _user(found.first())

    async def by_user_id(self, user_id: int) -> KnownUser | None:
        found = await self._run(_USER.where(GatewayUser.user_id == user_id).limit(1))
        return _user(found.first())

    async def mark_blocked(self, chat_id: int) -> None:
        await self._run(
            update(GatewayUser).where(GatewayUser.chat_id == chat_id).values(blocked=True)
        )

    async def count(self) -> int:
        found = await self._run(select(func.count()).select_from(GatewayUser))
        return int(found.scalar() or 0)


_USER = select(GatewayUser.user_id, GatewayUser.chat_id, GatewayUser.language)


def _user(row: Row[Any] | None) -> KnownUser | None:
    return KnownUser(row.user_id, row.chat_id, row.language) if row is not None else None


class Jobs:
    def __init__(self, run: Run) -> None:
        self._run = run

    async def view(
        self, *, job_id: int | None = None, request_id: uuid.UUID | None = None
    ) -> JobView | None:
        """The job by its id or, with no `job_id`, its request's; with both, by its id or, not
        linked yet (its JobCreated not handled here yet), its request's."""
        if job_id is not None and request_id is not None:
            key = or_(
                GatewayJob.job_id == job_id,
                GatewayJob.job_id.is_(None) & (GatewayJob.request_id == request_id),
            )
        elif job_id is not None:
            key = GatewayJob.job_id == job_id
        elif request_id is not None:
            key = GatewayJob.request_id == request_id
        else:
            raise ValueError("a job is found by its id or its request")
        row = (await self._run(_VIEW.where(key).limit(1))).first()
        if row is None:
            return None
        return JobView(
            row.request_id,
            row.chat_id,
            row.language,
            row.title,
            row.price,
            row.status_message_id,
            JobState(row.phase, row.attempt, row.step, row.total_steps),
            row.job_id,
        )

    async def request(self, request_id: uuid.UUID) -> RequestView | None:
        row = (await self._run(_REQUEST.where(GatewayJob.request_id == request_id))).first()
        return _request(row) if row is not None else None

    async def unfinished_of(self, telegram_id: int) -> list[RequestView]:
        found = await self._run(
            _REQUEST.where(GatewayJob.telegram_id == telegram_id, UNFINISHED).order_by(
                GatewayJob.created_at
            )
        )
        return [_request(row) for row in found]

    async def titles(self, job_ids: list[int]) -> dict[int, str]:
        found = await self._run(
            select(GatewayJob.job_id, GatewayJob.title).where(GatewayJob.job_id.in_(job_ids))
        )
        return {job_id: title for job_id, title in found if job_id is not None}

    async def stats(self) -> tuple[int, int]:
        """Jobs asked for in the last day, and jobs not finished."""
        since = datetime.now(UTC) - timedelta(days=1)
        found = await self._run(
            select(
                func.count().filter(GatewayJob.created_at >= since),
                func.count().filter(UNFINISHED),
            )
        )
        today, active = found.one()
        return int(today or 0), int(active or 0)


_VIEW = select(
    GatewayJob.request_id,
    GatewayJob.job_id,
    GatewayJob.chat_id,
    GatewayJob.language,
    GatewayJob.title,
    GatewayJob.price,
    GatewayJob.status_message_id,
    GatewayJob.phase,
    GatewayJob.attempt,
    GatewayJob.step,
    GatewayJob.total_steps,
)
_REQUEST = select(
    GatewayJob.request_id,
    GatewayJob.telegram_id,
    GatewayJob.title,
    GatewayJob.phase,
    GatewayJob.preset_id,
    GatewayJob.prompt,
    GatewayJob.image_key,
    GatewayJob.job_id,
)


def _request(row: Row[Any]) -> RequestView:
    return RequestView(
        row.request_id,
        row.telegram_id,
        row.title,
        row.phase,
        row.preset_id,
        row.prompt,
        row.image_key,
        row.job_id,
    )


class Credits:
    def __init__(self, run: Run) -> None:
        self._run = run

    async def record(
        self, event_id: uuid.UUID, telegram_id: int, kind: str, credits: int, balance: int
    ) -> None:
        await self._run(
            pg_insert(GatewayCredit)
            .values(
                event_id=event_id,
                telegram_id=telegram_id,
                kind=kind,
                credits=credits,
                balance=balance,
            )
            .on_conflict_do_nothing()
        )

    async def recent(self, telegram_id: int, limit: int) -> list[CreditView]:
        found = await self._run(
            select(
                GatewayCredit.kind, GatewayCredit.credits, GatewayCredit.balance, GatewayCredit.at
            )
            .where(GatewayCredit.telegram_id == telegram_id)
            .order_by(GatewayCredit.at.desc())
            .limit(limit)
        )
        return [CreditView(row.kind, row.credits, row.balance, row.at) for row in found]


class Mailbox:
    """Telegram calls to make after the commit; the sender delivers them (see `sender`)."""

    def __init__(self, run: Run) -> None:
        self._run = run

    async def send(self, key: str, chat_id: int, kind: str, payload: dict[str, Any]) -> None:
        """Once per `key`: a repeated key (a duplicate event) sends nothing more."""
        await self._run(
            pg_insert(OutboundMessage)
            .values(key=key, chat_id=chat_id, kind=kind, payload=payload)
            .on_conflict_do_nothing(index_elements=[OutboundMessage.key])
        )

    async def pending(self) -> int:
        found = await self._run(
            select(func.count())
            .select_from(OutboundMessage)
            .where(OutboundMessage.sent_at.is_(None))
        )
        return int(found.scalar() or 0)


def broadcast_statement(broadcast_id: str, text: str) -> Select[Any]:
    """One message per reachable chat, keyed by the broadcast; one row: how many."""
    chats = select(
        func.concat(f"broadcast:{broadcast_id}:", GatewayUser.chat_id),
        GatewayUser.chat_id,
        literal("text"),
        _json({"text": text}),
    ).where(GatewayUser.blocked.is_(False))
    mailed = (
        pg_insert(OutboundMessage)
        .from_select(["key", "chat_id", "kind", "payload"], chats)
        .on_conflict_do_nothing(index_elements=[OutboundMessage.key])
        .returning(OutboundMessage.id)
        .cte("mailed")
    )
    return select(func.count().label("mailed")).select_from(mailed)


# --- changes a unit of work applies


def remember_statement(
    *, telegram_id: int, user_id: int, chat_id: int, language: str, username: str | None
) -> Insert:
    """The user as the chat just showed them (and reachable again); always one row."""
    values = {
        "telegram_id": telegram_id,
        "user_id": user_id,
        "chat_id": chat_id,
        "language": language,
        "username": username,
    }
    return (
        pg_insert(GatewayUser)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[GatewayUser.telegram_id], set_={**values, "blocked": False}
        )
        .returning(GatewayUser.telegram_id)
    )


def move_statement(
    job: JobView,
    change: Change,
    *,
    link: tuple[int, int | None] | None = None,
    edit_interval: timedelta,
) -> Update | Select[Any]:
    """The job moved to `change.to` (and, with `link`, given its job id and the price) only
    while it is still as `job` says, and the messages `change` says written only if it moved;
    no row otherwise."""
    was, to = job.state, change.to
    guard = [
        GatewayJob.request_id == job.request_id,
        GatewayJob.phase == str(was.phase),
        GatewayJob.attempt == was.attempt,
        GatewayJob.step == was.step,
        GatewayJob.total_steps == was.total_steps,
    ]
    values: dict[str, Any] = {
        "phase": str(to.phase),
        "attempt": to.attempt,
        "step": to.step,
        "total_steps": to.total_steps,
    }
    if link is not None:
        job_id, price = link
        guard.append(or_(GatewayJob.job_id.is_(None), GatewayJob.job_id == job_id))  # no relink
        values["job_id"] = job_id
        if price is not None:
            values["price"] = price
    moved = update(GatewayJob).where(*guard).values(values).returning(GatewayJob.request_id)
    if not change.says_something:
        return moved
    anchor = moved.cte("moved")
    statement = select(anchor.c.request_id)
    if change.status is not None:
        shown = _show_status(
            anchor,
            job.request_id,
            job.chat_id,
            change.status,
            not_before=func.now() if change.final else _next_edit(edit_interval),
        )
        statement = statement.add_cte(shown.cte("shown"))
    if change.mail is not None:
        mail = change.mail
        mailed = (
            pg_insert(OutboundMessage)
            .from_select(
                ["key", "chat_id", "kind", "payload"],
                select(
                    literal(mail.key),
                    literal(job.chat_id, BigInteger()),
                    literal(mail.kind),
                    _json(mail.payload),
                ).select_from(anchor),
            )
            .on_conflict_do_nothing(index_elements=[OutboundMessage.key])
        )
        statement = statement.add_cte(mailed.cte("mailed"))
    return statement


def request_statement(job: dict[str, Any], status: dict[str, Any]) -> Select[Any]:
    """A new request's row and its status message's first text (at once); no row when the
    request exists already."""
    made = (
        pg_insert(GatewayJob)
        .values(**job)
        .on_conflict_do_nothing(index_elements=[GatewayJob.request_id])
        .returning(GatewayJob.request_id)
        .cte("made")
    )
    shown = _show_status(made, job["request_id"], job["chat_id"], status, not_before=func.now())
    return select(made.c.request_id).add_cte(shown.cte("shown"))


def _show_status(
    anchor: CTE,
    request_id: uuid.UUID,
    chat_id: int,
    payload: dict[str, Any],
    *,
    not_before: ColumnElement[Any],
) -> Insert:
    """The job's status message shows `payload` next, if `anchor` yields a row: the newest
    text replaces one not yet sent (`version` + 1)."""
    inserted = pg_insert(OutboundMessage).from_select(
        ["key", "chat_id", "kind", "payload"],
        select(
            literal(f"status:{request_id}"),
            literal(chat_id, BigInteger()),
            literal("edit"),
            _json(payload),
        ).select_from(anchor),
    )
    return inserted.on_conflict_do_update(
        index_elements=[OutboundMessage.key],
        set_={
            "payload": inserted.excluded.payload,
            "version": OutboundMessage.version + 1,
            "sent_at": null(),
            "attempts": 0,
            "not_before": not_before,
        },
    )


def _next_edit(interval: timedelta) -> ColumnElement[Any]:
    """A pending row keeps its turn; after a sent edit the next one waits `interval`."""
    return case(
        (OutboundMessage.sent_at.is_(None), OutboundMessage.not_before),
        else_=func.greatest(func.now(), OutboundMessage.sent_at + literal(interval, Interval())),
    )


def _json(value: dict[str, Any]) -> ColumnElement[Any]:
    return cast(literal(json.dumps(value)), JSONB)
