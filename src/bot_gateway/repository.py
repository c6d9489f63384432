"""SQL on the gateway's own tables, in SQLAlchemy Core.

The repositories run their statements through whatever the caller hands them: a unit of
work's `read` (autocommitted outside a transaction) or `execute` (in its transaction), or a
session's `execute`; none commits. Reads give views, never ORM rows. The guarded changes a
unit of work applies (`move_statement`, `request_statement`) are built here too: the job's
move and the user's messages in one statement, no row when the job is not as decided on.

Every statement is built once (at import, or once per shape: `functools.cache`) with bound
parameters, and runs with the values of the moment: building SQLAlchemy constructs per
message costs about as much CPU as executing them, and a statement built anew is composed
and compiled anew too. Bound parameters are named `gw_...`, never like a column: a parameter
named like a column of a table the statement writes would be taken for a value of it.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeAlias
from typing import cast as cast_

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    DateTime,
    Integer,
    Interval,
    Row,
    Select,
    String,
    Table,
    bindparam,
    case,
    cast,
    exists,
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
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.selectable import CTE

from bot_gateway.domain import (
    FINISHED,
    Change,
    CreditView,
    JobState,
    JobView,
    KnownUser,
    Mail,
    RequestView,
    ResultView,
)
from bot_gateway.limits import Lane
from bot_gateway.models import GatewayCredit, GatewayJob, GatewayUser, OutboundMessage
from messaging.unit_of_work import Change as Applied


class Run(Protocol):
    """How a repository runs a statement: `uow.read`, `uow.execute` or `session.execute`."""

    def __call__(self, statement: Executable, params: Mapping[str, Any], /) -> Awaitable[Any]: ...


Statement: TypeAlias = tuple[Applied, dict[str, Any]]
"""A change built once per shape, and the values to run it with: `uow.apply(*statement)`."""

JOBS = cast_("Table", GatewayJob.__table__)
USERS = cast_("Table", GatewayUser.__table__)
OUTBOUND = cast_("Table", OutboundMessage.__table__)
CREDITS = cast_("Table", GatewayCredit.__table__)

UNFINISHED = GatewayJob.phase.not_in([str(phase) for phase in FINISHED])


def _bound(table: Table, column: str) -> BindParameter[Any]:
    """`gw_<column>`, typed as the column."""
    return bindparam(f"gw_{column}", type_=table.c[column].type)


def _json(name: str) -> ColumnElement[Any]:
    """A bound JSON document (sent as its text: `json.dumps`)."""
    return cast(bindparam(name, type_=String()), JSONB)


class Users:
    def __init__(self, run: Run) -> None:
        self._run = run

    async def by_telegram_id(self, telegram_id: int) -> KnownUser | None:
        found = await self._run(_USER_BY_TELEGRAM_ID, {"gw_telegram_id": telegram_id})
        return _user(found.first())

    async def by_user_id(self, user_id: int) -> KnownUser | None:
        found = await self._run(_USER_BY_USER_ID, {"gw_user_id": user_id})
        return _user(found.first())

    async def mark_blocked(self, chat_id: int) -> None:
        await self._run(_MARK_BLOCKED, {"gw_chat_id": chat_id})

    async def choose_language(self, telegram_id: int, language: str) -> None:
        """The user's pick: their language from now on, whatever Telegram's says."""
        await self._run(
            _CHOOSE_LANGUAGE, {"gw_telegram_id": telegram_id, "gw_chosen_language": language}
        )

    async def record_source(self, telegram_id: int, source: str) -> None:
        """Where the user came from, unless they came from somewhere before (the first stays)."""
        await self._run(_RECORD_SOURCE, {"gw_telegram_id": telegram_id, "gw_source": source})

    async def count(self) -> int:
        found = await self._run(_COUNT_USERS, {})
        return int(found.scalar() or 0)


_USER = select(
    GatewayUser.user_id,
    GatewayUser.chat_id,
    GatewayUser.language,
    GatewayUser.blocked,
    GatewayUser.chosen_language,
)
_USER_BY_TELEGRAM_ID = _USER.where(GatewayUser.telegram_id == _bound(USERS, "telegram_id"))
_USER_BY_USER_ID = _USER.where(GatewayUser.user_id == _bound(USERS, "user_id")).limit(1)
_MARK_BLOCKED = (
    update(GatewayUser).where(GatewayUser.chat_id == _bound(USERS, "chat_id")).values(blocked=True)
)
_COUNT_USERS = select(func.count()).select_from(GatewayUser)
_THE_USER = GatewayUser.telegram_id == _bound(USERS, "telegram_id")
_CHOSEN = _bound(USERS, "chosen_language")
_CHOOSE_LANGUAGE = (
    update(GatewayUser).where(_THE_USER).values(language=_CHOSEN, chosen_language=_CHOSEN)
)
_RECORD_SOURCE = (
    update(GatewayUser)
    .where(_THE_USER, GatewayUser.source.is_(None))
    .values(source=_bound(USERS, "source"), source_at=func.now())
)


def _user(row: Row[Any] | None) -> KnownUser | None:
    if row is None:
        return None
    return KnownUser(row.user_id, row.chat_id, row.language, row.blocked, row.chosen_language)


class Jobs:
    def __init__(self, run: Run) -> None:
        self._run = run

    async def view(
        self, *, job_id: int | None = None, request_id: uuid.UUID | None = None
    ) -> JobView | None:
        """The job by its id or, with no `job_id`, its request's; with both, by its id or, not
        linked yet (its JobCreated not handled here yet), its request's."""
        if job_id is not None and request_id is not None:
            statement = _VIEW_BY_ID_OR_REQUEST
        elif job_id is not None:
            statement = _VIEW_BY_ID
        elif request_id is not None:
            statement = _VIEW_BY_REQUEST
        else:
            raise ValueError("a job is found by its id or its request")
        found = await self._run(statement, {"gw_job_id": job_id, "gw_request_id": request_id})
        row = found.first()
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
        row = (await self._run(_REQUEST_BY_ID, {"gw_request_id": request_id})).first()
        return _request(row) if row is not None else None

    async def request_of_job(self, job_id: int) -> RequestView | None:
        """The request job `job_id` is linked to."""
        row = (await self._run(_REQUEST_BY_JOB, {"gw_job_id": job_id})).first()
        return _request(row) if row is not None else None

    async def unfinished_of(self, telegram_id: int) -> list[RequestView]:
        found = await self._run(_UNFINISHED_OF, {"gw_telegram_id": telegram_id})
        return [_request(row) for row in found]

    async def titles(self, job_ids: list[int]) -> dict[int, str]:
        found = await self._run(_TITLES, {"gw_job_ids": job_ids})
        return {job_id: title for job_id, title in found if job_id is not None}

    async def result(self, request_id: uuid.UUID) -> ResultView | None:
        row = (await self._run(_RESULT, {"gw_request_id": request_id})).first()
        if row is None:
            return None
        return ResultView(
            row.request_id, row.telegram_id, row.title, row.result_key, row.completed_at
        )

    async def kept_results(
        self, telegram_id: int, job_ids: list[int], since: datetime
    ) -> dict[int, uuid.UUID]:
        """The request of each of the user's `job_ids` whose result is kept (completed since
        `since`)."""
        found = await self._run(
            _KEPT_RESULTS,
            {"gw_telegram_id": telegram_id, "gw_job_ids": job_ids, "gw_since": since},
        )
        return {row.job_id: row.request_id for row in found}

    async def stats(self) -> tuple[int, int]:
        """Jobs asked for in the last day, and jobs not finished."""
        since = datetime.now(UTC) - timedelta(days=1)
        today, active = (await self._run(_STATS, {"gw_since": since})).one()
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
_BY_ID = GatewayJob.job_id == _bound(JOBS, "job_id")
_BY_REQUEST = GatewayJob.request_id == _bound(JOBS, "request_id")
_VIEW_BY_ID = _VIEW.where(_BY_ID).limit(1)
_VIEW_BY_REQUEST = _VIEW.where(_BY_REQUEST).limit(1)
_VIEW_BY_ID_OR_REQUEST = _VIEW.where(or_(_BY_ID, GatewayJob.job_id.is_(None) & _BY_REQUEST)).limit(
    1
)
_REQUEST = select(
    GatewayJob.request_id,
    GatewayJob.telegram_id,
    GatewayJob.title,
    GatewayJob.phase,
    GatewayJob.preset_id,
    GatewayJob.prompt,
    GatewayJob.image_key,
    GatewayJob.extra_image_keys,
    GatewayJob.job_id,
)
_REQUEST_BY_ID = _REQUEST.where(_BY_REQUEST)
_REQUEST_BY_JOB = _REQUEST.where(_BY_ID)
_UNFINISHED_OF = _REQUEST.where(
    GatewayJob.telegram_id == _bound(JOBS, "telegram_id"), UNFINISHED
).order_by(GatewayJob.created_at)
_TITLES = select(GatewayJob.job_id, GatewayJob.title).where(
    GatewayJob.job_id.in_(bindparam("gw_job_ids", expanding=True))
)
_RESULT = select(
    GatewayJob.request_id,
    GatewayJob.telegram_id,
    GatewayJob.title,
    GatewayJob.result_key,
    GatewayJob.completed_at,
).where(_BY_REQUEST)
_KEPT_RESULTS = select(GatewayJob.job_id, GatewayJob.request_id).where(
    GatewayJob.job_id.in_(bindparam("gw_job_ids", expanding=True)),
    GatewayJob.telegram_id == _bound(JOBS, "telegram_id"),
    GatewayJob.result_key.is_not(None),
    GatewayJob.completed_at >= bindparam("gw_since", type_=DateTime(timezone=True)),
)
_STATS = select(
    func.count().filter(
        GatewayJob.created_at >= bindparam("gw_since", type_=DateTime(timezone=True))
    ),
    func.count().filter(UNFINISHED),
)


def _request(row: Row[Any]) -> RequestView:
    return RequestView(
        row.request_id,
        row.telegram_id,
        row.title,
        row.phase,
        row.preset_id,
        row.prompt,
        tuple(key for key in (row.image_key, *(row.extra_image_keys or ())) if key),
        row.job_id,
    )


class Credits:
    def __init__(self, run: Run) -> None:
        self._run = run

    async def record(
        self, event_id: uuid.UUID, telegram_id: int, kind: str, credits: int, balance: Decimal | int
    ) -> None:
        await self._run(
            _RECORD_CREDIT,
            {
                "gw_event_id": event_id,
                "gw_telegram_id": telegram_id,
                "gw_kind": kind,
                "gw_credits": credits,
                "gw_balance": balance,
            },
        )

    async def recent(self, telegram_id: int, limit: int) -> list[CreditView]:
        found = await self._run(_RECENTCREDITS, {"gw_telegram_id": telegram_id, "gw_limit": limit})
        return [CreditView(row.kind, row.credits, row.balance, row.at) for row in found]


_RECORD_CREDIT = (
    pg_insert(GatewayCredit)
    .values(
        {
            name: _bound(CREDITS, name)
            for name in ("event_id", "telegram_id", "kind", "credits", "balance")
        }
    )
    .on_conflict_do_nothing()
)
_RECENTCREDITS = (
    select(GatewayCredit.kind, GatewayCredit.credits, GatewayCredit.balance, GatewayCredit.at)
    .where(GatewayCredit.telegram_id == _bound(CREDITS, "telegram_id"))
    .order_by(GatewayCredit.at.desc())
    .limit(bindparam("gw_limit", type_=Integer()))
)


class Mailbox:
    """Telegram calls to make after the commit; the sender delivers them (see `sender`)."""

    def __init__(self, run: Run) -> None:
        self._run = run

    async def send(self, key: str, chat_id: int, kind: str, payload: dict[str, Any]) -> None:
        """Once per `key`: a repeated key (a duplicate event) sends nothing more."""
        await self._run(
            _SEND,
            {
                "gw_key": key,
                "gw_chat_id": chat_id,
                "gw_kind": kind,
                "gw_payload": json.dumps(payload),
            },
        )

    async def pending(self) -> int:
        found = await self._run(_PENDING, {})
        return int(found.scalar() or 0)


_SEND = (
    pg_insert(OutboundMessage)
    .values(
        key=_bound(OUTBOUND, "key"),
        chat_id=_bound(OUTBOUND, "chat_id"),
        kind=_bound(OUTBOUND, "kind"),
        payload=_json("gw_payload"),
    )
    .on_conflict_do_nothing(index_elements=[OutboundMessage.key])
)
_PENDING = (
    select(func.count()).select_from(OutboundMessage).where(OutboundMessage.sent_at.is_(None))
)


def broadcast_statement(broadcast_id: str, text: str) -> Statement:
    """One message per reachable chat, keyed by the broadcast; one row: how many."""
    return _BROADCAST, {
        "gw_broadcast_key": f"broadcast:{broadcast_id}:",
        "gw_broadcast_payload": json.dumps({"text": text}),
    }


def _broadcast() -> Select[Any]:
    chats = select(
        func.concat(bindparam("gw_broadcast_key", type_=String()), GatewayUser.chat_id),
        GatewayUser.chat_id,
        literal("text"),
        _json("gw_broadcast_payload"),
        literal(int(Lane.bulk)),
    ).where(GatewayUser.blocked.is_(False))
    mailed = (
        pg_insert(OutboundMessage)
        .from_select(["key", "chat_id", "kind", "payload", "lane"], chats)
        .on_conflict_do_nothing(index_elements=[OutboundMessage.key])
        .returning(OutboundMessage.id)
        .cte("mailed")
    )
    return select(func.count().label("mailed")).select_from(mailed)


_BROADCAST = _broadcast()


# --- changes a unit of work applies


def remember_statement(
    *, telegram_id: int, user_id: int, chat_id: int, language: str, username: str | None
) -> Statement:
    """The user as the chat just showed them (and reachable again); always one row."""
    return _REMEMBER, {
        "gw_telegram_id": telegram_id,
        "gw_user_id": user_id,
        "gw_chat_id": chat_id,
        "gw_language": language,
        "gw_username": username,
    }


def _remember() -> Insert:
    inserted = pg_insert(GatewayUser).values(
        {
            name: _bound(USERS, name)
            for name in ("telegram_id", "user_id", "chat_id", "language", "username")
        }
    )
    return inserted.on_conflict_do_update(
        index_elements=[GatewayUser.telegram_id],
        set_={
            "user_id": inserted.excluded.user_id,
            "chat_id": inserted.excluded.chat_id,
            "language": inserted.excluded.language,
            "username": inserted.excluded.username,
            "blocked": False,
        },
    ).returning(GatewayUser.telegram_id)


_REMEMBER = _remember()


def move_statement(
    job: JobView,
    change: Change,
    *,
    link: tuple[int, int | None] | None = None,
    edit_interval: timedelta,
) -> Statement:
    """The job moved to `change.to` (and, with `link`, given its job id and the price) only
    while it is still as `job` says, and the messages `change` says written only if it moved;
    no row otherwise."""
    was, to = job.state, change.to
    priced = link is not None and link[1] is not None
    shown = None if change.status is None else "final" if change.final else "paced"
    resulted = change.result_key is not None
    statement = _move_shape(link is not None, priced, shown, change.mail is not None, resulted)
    params: dict[str, Any] = {
        "gw_request_id": job.request_id,
        "gw_was_phase": str(was.phase),
        "gw_was_attempt": was.attempt,
        "gw_was_step": was.step,
        "gw_was_total_steps": was.total_steps,
        "gw_phase": str(to.phase),
        "gw_attempt": to.attempt,
        "gw_step": to.step,
        "gw_total_steps": to.total_steps,
    }
    if link is not None:
        params["gw_job_id"] = link[0]
        if priced:
            params["gw_price"] = link[1]
    if change.says_something:
        params["gw_chat_id"] = job.chat_id
    if change.status is not None:
        params["gw_status_key"] = f"status:{job.request_id}"
        params["gw_status"] = json.dumps(change.status)
        if not change.final:
            params["gw_edit_interval"] = edit_interval
    if resulted:
        params["gw_result_key"] = change.result_key
    if change.mail is not None:
        params["gw_mail_key"] = change.mail.key
        params["gw_mail_kind"] = change.mail.kind
        params["gw_mail"] = json.dumps(change.mail.payload)
    return statement, params


@functools.cache
def _move_shape(
    linked: bool, priced: bool, shown: str | None, mailed: bool, resulted: bool = False
) -> Applied:
    """One kind of move (linking the job or not, and its price; a status text to show at
    once, `final`, or `paced`; another message; the result kept), with every value bound:
    built, composed and compiled once per shape."""
    guard = [
        GatewayJob.request_id == _bound(JOBS, "request_id"),
        GatewayJob.phase == bindparam("gw_was_phase", type_=JOBS.c.phase.type),
        GatewayJob.attempt == bindparam("gw_was_attempt", type_=Integer()),
        GatewayJob.step == bindparam("gw_was_step", type_=Integer()),
        GatewayJob.total_steps == bindparam("gw_was_total_steps", type_=Integer()),
    ]
    values: dict[str, Any] = {
        name: _bound(JOBS, name) for name in ("phase", "attempt", "step", "total_steps")
    }
    if linked:
        job_id = _bound(JOBS, "job_id")
        guard.append(or_(GatewayJob.job_id.is_(None), GatewayJob.job_id == job_id))  # no relink
        values["job_id"] = job_id
        if priced:
            values["price"] = _bound(JOBS, "price")
    if resulted:
        values["result_key"] = _bound(JOBS, "result_key")
        values["completed_at"] = func.now()
    moved = update(GatewayJob).where(*guard).values(values).returning(GatewayJob.request_id)
    if shown is None and not mailed:
        return moved
    anchor = moved.cte("moved")
    statement: Select[Any] = select(anchor.c.request_id)
    if shown is not None:
        not_before = func.now() if shown == "final" else _NEXT_EDIT
        statement = statement.add_cte(_show_status(anchor, not_before=not_before).cte("shown"))
    if mailed:
        statement = statement.add_cte(_mail(anchor).cte("mailed"))
    return statement


def _mail(anchor: CTE) -> Insert:
    """The message `gw_mail` (`gw_mail_kind`, once per `gw_mail_key`) to chat `gw_chat_id`, if
    `anchor` yields a row."""
    return (
        pg_insert(OutboundMessage)
        .from_select(
            ["key", "chat_id", "kind", "payload"],
            select(
                bindparam("gw_mail_key", type_=String()),
                _CHAT_ID,
                bindparam("gw_mail_kind", type_=String()),
                _json("gw_mail"),
            ).select_from(anchor),
        )
        .on_conflict_do_nothing(index_elements=[OutboundMessage.key])
    )


_CHAT_ID = bindparam("gw_chat_id", type_=BigInteger())


def request_statement(job: dict[str, Any], status: dict[str, Any]) -> Statement:
    """A new request's row and its status message's first text (at once); no row when the
    request exists already."""
    params = {f"gw_{name}": value for name, value in job.items()}
    params["gw_status_key"] = f"status:{job['request_id']}"
    params["gw_status"] = json.dumps(status)
    return _request_shape(tuple(job)), params


def followed_statement(job: dict[str, Any], mail: Mail) -> Statement:
    """The row of a job the gateway did not ask for (an operator's retry) and a message that
    tells its user of it; no row when the request exists already. Its status message comes
    with the job's next event."""
    params = {f"gw_{name}": value for name, value in job.items()}
    params["gw_mail_key"] = mail.key
    params["gw_mail_kind"] = mail.kind
    params["gw_mail"] = json.dumps(mail.payload)
    return _request_shape(tuple(job), mailed=True), params


@functools.cache
def _request_shape(columns: tuple[str, ...], *, mailed: bool = False) -> Select[Any]:
    """The row and, if it was made, its status message's first text and its user's
    `active_at`, or (`mailed`: an operator's retry, not the user's doing) another message."""
    made = (
        pg_insert(GatewayJob)
        .values({name: _bound(JOBS, name) for name in columns})
        .on_conflict_do_nothing(index_elements=[GatewayJob.request_id])
        .returning(GatewayJob.request_id)
        .cte("made")
    )
    if mailed:
        return select(made.c.request_id).add_cte(_mail(made).cte("shown"))
    asked = (
        update(GatewayUser)
        .where(GatewayUser.telegram_id == _bound(JOBS, "telegram_id"), exists(select(made)))
        .values(active_at=func.now())
    )
    return select(made.c.request_id).add_cte(
        _show_status(made, not_before=func.now()).cte("shown"), asked.cte("asked")
    )


def _show_status(anchor: CTE, *, not_before: ColumnElement[Any]) -> Insert:
    """The job's status message (`gw_status_key`, in chat `gw_chat_id`) shows `gw_status`
    next, if `anchor` yields a row: the newest text replaces one not yet sent (`version` + 1)."""
    inserted = pg_insert(OutboundMessage).from_select(
        ["key", "chat_id", "kind", "payload"],
        select(
            bindparam("gw_status_key", type_=String()),
            _CHAT_ID,
            literal("edit"),
            _json("gw_status"),
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


_NEXT_EDIT = case(
    (OutboundMessage.sent_at.is_(None), OutboundMessage.not_before),
    else_=func.greatest(
        func.now(), OutboundMessage.sent_at + bindparam("gw_edit_interval", type_=Interval())
    ),
)
"""A pending row keeps its turn; after a sent edit the next one waits `gw_edit_interval`."""
