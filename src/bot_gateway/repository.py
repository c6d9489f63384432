"""SQL on the gateway's own tables; runs inside the caller's transaction and never commits."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot_gateway.domain import FINISHED, Change, JobState, JobView
from bot_gateway.models import (
    DELIVERY,
    GatewayCredit,
    GatewayJob,
    GatewayUser,
    OutboundMessage,
)
from contracts.envelope import RawEnvelope

_SEND = text(
    "INSERT INTO gateway_outbound (key, chat_id, kind, payload) "
    "VALUES (:key, :chat_id, :kind, CAST(:payload AS jsonb)) ON CONFLICT (key) DO NOTHING"
)
_SHOW_STATUS_SQL = (
    "INSERT INTO gateway_outbound AS o (key, chat_id, kind, payload) "
    "VALUES (:key, :chat_id, 'edit', CAST(:payload AS jsonb)) "
    "ON CONFLICT (key) DO UPDATE SET payload = excluded.payload, version = o.version + 1, "
    "sent_at = NULL, attempts = 0, not_before = {not_before}"
)
# a pending row keeps its turn; after a sent edit the next one waits the interval
_EDIT_NOT_BEFORE = (
    "CASE WHEN o.sent_at IS NULL THEN o.not_before "
    "ELSE greatest(now(), o.sent_at + CAST(:edit_interval AS interval)) END"
)
_SHOW_STATUS = text(_SHOW_STATUS_SQL.format(not_before=_EDIT_NOT_BEFORE))
_SHOW_FINAL_STATUS = text(_SHOW_STATUS_SQL.format(not_before="now()"))
_STATUS_VALUES = "VALUES (:key, :chat_id, 'edit', CAST(:payload AS jsonb))"
# A new request in one autocommitted statement: its row, JobRequested in the outbox and the
# status message's first text, all or (the request exists already) nothing.
_REQUEST = text(
    "WITH job AS ("
    "INSERT INTO gateway_jobs (request_id, telegram_id, user_id, chat_id, language, preset_id, "
    "title, prompt, image_key, phase, price, status_message_id) "
    "VALUES (:request_id, :telegram_id, :user_id, :chat_id, :language, :preset_id, :title, "
    ":prompt, :image_key, :phase, :price, :status_message_id) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id), "
    f"announced AS (INSERT INTO {DELIVERY.outbox.name} (id, routing_key, envelope) "
    "SELECT CAST(:outbox_id AS uuid), :routing_key, CAST(:envelope AS jsonb) FROM job) "
    + _SHOW_STATUS_SQL.replace(
        _STATUS_VALUES, "SELECT :key, :chat_id, 'edit', CAST(:payload AS jsonb) FROM job"
    ).format(not_before="now()")
    + " RETURNING 1"
)

_UNHANDLED = f"NOT EXISTS (SELECT 1 FROM {DELIVERY.inbox.name} WHERE event_id = :event_id)"
_VIEW = (
    "SELECT request_id, job_id, chat_id, language, title, price, status_message_id, "
    "phase, attempt, step, total_steps FROM gateway_jobs WHERE {key} AND " + _UNHANDLED
)
_VIEW_BY_JOB = text(
    _VIEW.format(
        key="(job_id = :job_id OR (job_id IS NULL AND request_id = CAST(:request_id AS uuid)))"
    )
)
_VIEW_BY_REQUEST = text(_VIEW.format(key="request_id = :request_id"))
UNIQUE_VIOLATION = "23505"


async def request_at_once(
    connection: AsyncConnection,
    job: dict[str, Any],
    status: dict[str, Any],
    announce: tuple[str, RawEnvelope],
) -> bool:
    """A new request's row, its JobRequested (`announce`: routing key, envelope) in the outbox
    and its status message's first (final) text, in one statement; False, and nothing written,
    when the request exists already."""
    routing_key, envelope = announce
    values = {
        **job,
        "key": f"status:{job['request_id']}",
        "payload": json.dumps(status),
        "outbox_id": envelope.id,
        "routing_key": routing_key,
        "envelope": envelope.model_dump_json(),
    }
    return (await connection.execute(_REQUEST, values)).first() is not None


class Users:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def by_telegram_id(self, telegram_id: int) -> GatewayUser | None:
        return await self._session.get(GatewayUser, telegram_id)

    async def by_user_id(self, user_id: int) -> GatewayUser | None:
        found = await self._session.execute(
            select(GatewayUser).where(GatewayUser.user_id == user_id).limit(1)
        )
        return found.scalar_one_or_none()

    async def remember(
        self, *, telegram_id: int, user_id: int, chat_id: int, language: str, username: str | None
    ) -> None:
        values = {
            "telegram_id": telegram_id,
            "user_id": user_id,
            "chat_id": chat_id,
            "language": language,
            "username": username,
        }
        await self._session.execute(
            insert(GatewayUser)
            .values(**values)
            .on_conflict_do_update(
                index_elements=[GatewayUser.telegram_id],
                set_={**values, "blocked": False},
            )
        )

    async def mark_blocked(self, chat_id: int) -> None:
        await self._session.execute(
            update(GatewayUser).where(GatewayUser.chat_id == chat_id).values(blocked=True)
        )

    async def reachable_chats(self) -> list[int]:
        found = await self._session.execute(
            select(GatewayUser.chat_id).where(GatewayUser.blocked.is_(False))
        )
        return list(found.scalars())

    async def count(self) -> int:
        return int(await self._session.scalar(select(func.count()).select_from(GatewayUser)) or 0)


class Jobs:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def by_request(self, request_id: uuid.UUID, *, lock: bool = False) -> GatewayJob | None:
        query = select(GatewayJob).where(GatewayJob.request_id == request_id)
        found = await self._session.execute(query.with_for_update() if lock else query)
        return found.scalar_one_or_none()

    async def by_job(self, job_id: int) -> GatewayJob | None:
        found = await self._session.execute(
            select(GatewayJob).where(GatewayJob.job_id == job_id).with_for_update()
        )
        return found.scalar_one_or_none()

    async def active_of(self, telegram_id: int) -> list[GatewayJob]:
        found = await self._session.execute(
            select(GatewayJob)
            .where(
                GatewayJob.telegram_id == telegram_id,
                GatewayJob.phase.not_in([str(phase) for phase in FINISHED]),
            )
            .order_by(GatewayJob.created_at)
        )
        return list(found.scalars())

    async def titles(self, job_ids: list[int]) -> dict[int, str]:
        found = await self._session.execute(
            select(GatewayJob.job_id, GatewayJob.title).where(GatewayJob.job_id.in_(job_ids))
        )
        return {job_id: title for job_id, title in found.all() if job_id is not None}

    async def stats(self) -> tuple[int, int]:
        since = datetime.now(UTC) - timedelta(days=1)
        today = await self._session.scalar(
            select(func.count()).select_from(GatewayJob).where(GatewayJob.created_at >= since)
        )
        active = await self._session.scalar(
            select(func.count())
            .select_from(GatewayJob)
            .where(GatewayJob.phase.not_in([str(phase) for phase in FINISHED]))
        )
        return int(today or 0), int(active or 0)


class Credits:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(
        self, event_id: uuid.UUID, telegram_id: int, kind: str, credits: int, balance: int
    ) -> None:
        await self._session.execute(
            insert(GatewayCredit)
            .values(
                event_id=event_id,
                telegram_id=telegram_id,
                kind=kind,
                credits=credits,
                balance=balance,
            )
            .on_conflict_do_nothing()
        )

    async def recent(self, telegram_id: int, limit: int) -> list[GatewayCredit]:
        found = await self._session.execute(
            select(GatewayCredit)
            .where(GatewayCredit.telegram_id == telegram_id)
            .order_by(GatewayCredit.at.desc())
            .limit(limit)
        )
        return list(found.scalars())


class Mailbox:
    """Telegram calls to make after the commit; the sender delivers them (see `sender`)."""

    def __init__(self, session: AsyncSession, *, edit_interval_s: float) -> None:
        self._session = session
        self._edit_interval = timedelta(seconds=edit_interval_s)

    async def send(self, key: str, chat_id: int, kind: str, payload: dict[str, Any]) -> None:
        """Once per `key`: a repeated key (a duplicate event) sends nothing more."""
        connection = await self._session.connection()  # Core text: no ORM work per message
        await connection.execute(
            _SEND, {"key": key, "chat_id": chat_id, "kind": kind, "payload": json.dumps(payload)}
        )

    async def show_status(
        self, request_id: uuid.UUID, chat_id: int, payload: dict[str, Any], *, final: bool
    ) -> None:
        """The job's status message shows `payload` next: the newest text wins, and edits
        after the last one sent wait `edit_interval_s` unless this is the final state."""
        values = {"key": f"status:{request_id}", "chat_id": chat_id, "payload": json.dumps(payload)}
        connection = await self._session.connection()
        if final:
            await connection.execute(_SHOW_FINAL_STATUS, values)
        else:
            await connection.execute(_SHOW_STATUS, {**values, "edit_interval": self._edit_interval})

    async def pending(self) -> int:
        return int(
            await self._session.scalar(
                select(func.count())
                .select_from(OutboundMessage)
                .where(OutboundMessage.sent_at.is_(None))
            )
            or 0
        )


class JobMoves:
    """A job's move as the consumer's fast paths make it (see `bot_gateway.fast_paths`): one
    read, then one write that applies the move only while the job is still as read; each
    statement commits on its own, on an autocommitted connection."""

    def __init__(self, connection: AsyncConnection, *, edit_interval_s: float) -> None:
        self._connection = connection
        self._edit_interval = timedelta(seconds=edit_interval_s)

    async def read(
        self, event_id: uuid.UUID, *, job_id: int | None = None, request_id: uuid.UUID | None = None
    ) -> JobView | None:
        """The job by its id or, with no `job_id`, its request's; with both, by its id or, not
        linked yet (JobCreated not handled here yet), its request's. None when there is none,
        or when the event was handled already."""
        if job_id is not None:
            found = await self._connection.execute(
                _VIEW_BY_JOB,
                {
                    "job_id": job_id,
                    "request_id": str(request_id) if request_id else None,
                    "event_id": event_id,
                },
            )
        else:
            found = await self._connection.execute(
                _VIEW_BY_REQUEST, {"request_id": request_id, "event_id": event_id}
            )
        row = found.first()
        if row is None:
            return None
        state = JobState(row.phase, row.attempt, row.step, row.total_steps)
        return JobView(
            row.request_id,
            row.chat_id,
            row.language,
            row.title,
            row.price,
            row.status_message_id,
            state,
            row.job_id,
        )

    async def apply(
        self,
        job: JobView,
        change: Change,
        event_id: uuid.UUID,
        event_type: str,
        *,
        link: tuple[int, int | None] | None = None,
    ) -> bool:
        """`change` (and, with `link`, the job id and price), the event's inbox mark and the
        messages, in one statement: the mark only if the change applied, the messages only
        if the mark was new. False, and nothing written, when the job is no longer as read
        or the event was handled meanwhile."""
        was, to = job.state, change.to
        values: dict[str, Any] = {
            "request_id": job.request_id,
            "was_phase": str(was.phase),
            "was_attempt": was.attempt,
            "was_step": was.step,
            "was_total_steps": was.total_steps,
            "phase": str(to.phase),
            "attempt": to.attempt,
            "step": to.step,
            "total_steps": to.total_steps,
            "event_id": event_id,
            "event_type": event_type,
        }
        if link is not None:
            values["job_id"], values["price"] = link
        status = None
        if change.status is not None:
            status = "final" if change.final else "edit"
            values["key"], values["chat_id"] = f"status:{job.request_id}", job.chat_id
            values["payload"] = json.dumps(change.status)
            if not change.final:
                values["edit_interval"] = self._edit_interval
        if change.mail is not None:
            values["mail_chat_id"] = job.chat_id
            values["mail_key"], values["mail_kind"] = change.mail.key, change.mail.kind
            values["mail_payload"] = json.dumps(change.mail.payload)
        statement = _move(link=link is not None, status=status, mail=change.mail is not None)
        try:
            applied = await self._connection.execute(statement, values)
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
                raise
            return False  # the inbox mark was taken meanwhile (or job_id is taken): nothing
        return bool(applied.scalar_one())


@functools.cache
def _move(*, link: bool, status: str | None, mail: bool) -> TextClause:
    """The statement of `JobMoves.apply` for one shape of change, built once."""
    sets = "phase = :phase, attempt = :attempt, step = :step, total_steps = :total_steps"
    linked = ""
    if link:
        sets += ", job_id = :job_id, price = coalesce(CAST(:price AS integer), price)"
        linked = "AND (job_id IS NULL OR job_id = :job_id) "  # never relink, as reads agree
    sql = (
        f"WITH moved AS (UPDATE gateway_jobs SET {sets} "
        "WHERE request_id = :request_id AND phase = :was_phase AND attempt = :was_attempt "
        f"AND step = :was_step AND total_steps = :was_total_steps {linked}AND "
        + _UNHANDLED
        + " RETURNING request_id), "
        f"claimed AS (INSERT INTO {DELIVERY.inbox.name} (event_id, event_type) "
        "SELECT CAST(:event_id AS uuid), :event_type FROM moved RETURNING event_id)"
    )
    if status is not None:
        not_before = "now()" if status == "final" else _EDIT_NOT_BEFORE
        shown = _SHOW_STATUS_SQL.replace(
            _STATUS_VALUES, "SELECT :key, :chat_id, 'edit', CAST(:payload AS jsonb) FROM claimed"
        ).format(not_before=not_before)
        sql += f", shown AS ({shown})"
    if mail:
        sql += (
            ", mailed AS (INSERT INTO gateway_outbound (key, chat_id, kind, payload) "
            "SELECT :mail_key, :mail_chat_id, :mail_kind, CAST(:mail_payload AS jsonb) "
            "FROM claimed ON CONFLICT (key) DO NOTHING)"
        )
    return text(sql + " SELECT count(*) FROM claimed")
