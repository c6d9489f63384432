"""SQL for presets and jobs; never commits (the unit of work does).

Every change to a user's jobs first takes that user's advisory lock (`lock_user`), then the job
rows: one lock order everywhere, so the per-user cap holds under concurrency without deadlocks,
and several replicas may run the same handlers and loops.

The lifecycle's statements are SQLAlchemy Core on the transaction's connection, each doing as
much as one round trip can: a stage change and its transition row are one statement, and so is
a user's whole dispatch (selection, moves, transitions, and the facts for the queue position
and ETA). The ORM is kept for the catalog, which is neither hot nor simple.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, TextClause, func, select, text, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from contracts.envelope import RawEnvelope
from jobs.domain import (
    IN_FLIGHT,
    LEGACY_STATUS,
    UNFINISHED,
    WITH_DEADLINE,
    JobFacts,
    PresetFacts,
    Stage,
    UserQueue,
)
from jobs.models import DELIVERY, Job, JobStatus, JobTransition, Preset

USER_LOCK_SPACE = 0x4A0B
"""First key of the two-key advisory locks jobs takes per user (`pg_advisory_xact_lock`)."""
CATALOG_LOCK = (0x4A0B, 0)
"""Serializes catalog imports (user ids start at 1)."""

JOBS = cast("Table", Job.__table__)
TRANSITIONS = cast("Table", JobTransition.__table__)
INBOX = DELIVERY.inbox
OUTBOX = DELIVERY.outbox


def _stages(stages: frozenset[Stage]) -> str:
    """A stage set as an SQL list; the values are our own enum's, never user input."""
    return ", ".join(f"'{stage.value}'" for stage in sorted(stages))


@dataclass(frozen=True)
class NewJob:
    id: int
    request_id: uuid.UUID
    user_id: int
    telegram_id: int
    chat_id: int
    language: str
    preset_id: int | None
    prompt: str
    image_key: str | None
    price: int
    workflow_type: str
    seed: int
    payment_deadline: datetime


@dataclass(frozen=True)
class JobRow:
    """What the lifecycle reads of a job it is about to change."""

    id: int
    user_id: int
    chat_id: int | None
    request_id: uuid.UUID | None
    stage: str
    retry_count: int
    workflow_type: str | None
    prompt: str | None
    image_path: str | None
    seed: int | None
    deadline_at: datetime | None
    debited_at: datetime | None
    now: datetime
    """The transaction's clock (`now()`), read with the row to save a round trip."""


@dataclass(frozen=True)
class RequestState:
    """What deciding a request needs, read in one statement under the user's lock."""

    existing_job: int | None
    unfinished_jobs: int
    preset: PresetFacts | None
    next_job_id: int
    now: datetime


@dataclass(frozen=True)
class Outgoing:
    """An event to write to the outbox in the statement that causes it."""

    envelope: RawEnvelope
    routing_key: str


@dataclass(frozen=True)
class Dispatched:
    """A job just handed to its GPU queue, with what its JobDispatched and JobQueued say."""

    id: int
    user_id: int
    chat_id: int | None
    request_id: uuid.UUID | None
    retry_count: int
    workflow_type: str | None
    prompt: str | None
    image_path: str | None
    seed: int | None
    position: int
    busy_runners: int
    recent_durations_ms: list[int]


@dataclass(frozen=True)
class Moved:
    """A job just moved, with what the events about it name."""

    id: int
    user_id: int
    chat_id: int | None
    request_id: uuid.UUID | None


@dataclass(frozen=True)
class HistoryRow:
    id: int
    stage: str | None
    status: str | None
    prompt: str | None
    preset_id: int | None
    price: int | None
    result_path: str | None
    error: str | None
    created_at: datetime | None
    updated_at: datetime | None


_LOCK_USER = text("SELECT pg_advisory_xact_lock(:space, :user_id)")
_TRY_LOCK_USER = text("SELECT pg_try_advisory_xact_lock(:space, :user_id)")
_LOCK_OWNER = text(
    """
    SELECT user_id, pg_advisory_xact_lock(:space, user_id)
    FROM jobs WHERE id = :job_id AND stage IS NOT NULL AND user_id IS NOT NULL
    """
)
_JOB_COLUMNS = (
    "id, user_id, chat_id, request_id, stage, retry_count, workflow_type, prompt, image_path, "
    "seed, deadline_at, debited_at"
)
_LOCK_JOB = text(
    f"SELECT {_JOB_COLUMNS}, now() AS now FROM jobs "
    "WHERE id = :job_id AND stage IS NOT NULL FOR UPDATE"
)
_REQUEST_STATE = text(
    f"""
    SELECT (SELECT id FROM jobs WHERE request_id = :request_id) AS existing_job,
           (SELECT count(*) FROM jobs
            WHERE user_id = :user_id AND stage IN ({_stages(UNFINISHED)})) AS unfinished_jobs,
           p.id AS preset_id, p.prompt, p.price, p.workflow_type, p.enabled,
           nextval(pg_get_serial_sequence('jobs', 'id')) AS next_job_id,
           now() AS now
    FROM (SELECT 1) AS one LEFT JOIN presets p ON p.id = :preset_id
    """
)
"""Also draws the id the job will have if it is made, so its JobCreated can be written in the
statement that makes it (an unused id is a gap, as a rolled-back insert would leave)."""
_CREATE_JOB = f"""
    WITH created AS (
        INSERT INTO jobs (id, request_id, user_id, telegram_id, chat_id, language, preset_id,
                          prompt, image_path, price, workflow_type, seed, stage, status,
                          retry_count, deadline_at)
        VALUES (:job_id, :request_id, :user_id, :telegram_id, :chat_id, :language, :preset_id,
                :prompt, :image_path, :price, :workflow_type, :seed,
                '{Stage.awaiting_payment.value}', '{JobStatus.queued.value}', 0, :deadline_at)
        ON CONFLICT (request_id) DO NOTHING
        RETURNING id
    ), recorded AS (
        INSERT INTO job_transitions (job_id, from_stage, to_stage, attempt, reason, event_id)
        SELECT id, NULL, '{Stage.awaiting_payment.value}', 1, 'requested',
               CAST(:event_id AS uuid)
        FROM created
    )"""
_INSERT_JOB = text(_CREATE_JOB + " SELECT id FROM created")
_INSERT_JOB_ANNOUNCED = text(
    _CREATE_JOB
    + f""", announced AS (
        INSERT INTO {OUTBOX.name} (id, routing_key, envelope)
        SELECT CAST(:outbox_id AS uuid), :routing_key, CAST(:envelope AS jsonb) FROM created
    )
    SELECT id FROM created"""
)
_CLAIM = f"""
    WITH claimed AS (
        INSERT INTO {INBOX.name} (event_id, event_type) VALUES (:event_id, :event_type)
        ON CONFLICT DO NOTHING
        RETURNING event_id
    )"""
_CLAIM_AND_LOCK_USER = text(
    _CLAIM + " SELECT pg_advisory_xact_lock(:space, :user_id) AS locked FROM claimed"
)
_CLAIM_AND_LOCK_OWNER = text(
    _CLAIM
    + """
    SELECT jobs.user_id, pg_advisory_xact_lock(:space, jobs.user_id) AS locked
    FROM claimed, jobs
    WHERE jobs.id = :job_id AND jobs.stage IS NOT NULL AND jobs.user_id IS NOT NULL
    """
)
"""The inbox mark and the owner's lock in one round trip, for the fast paths: no row when the
event is a duplicate or names a job jobs does not know."""
_DISPATCH = text(
    f"""
    WITH in_flight AS (
        SELECT count(*) AS jobs FROM jobs
        WHERE user_id = :user_id AND stage IN ({_stages(IN_FLIGHT)})
    ), ready AS (
        SELECT id FROM jobs
        WHERE user_id = :user_id AND stage = '{Stage.waiting.value}'
          AND (next_attempt_at IS NULL OR next_attempt_at <= now())
        ORDER BY created_at, id
        LIMIT (SELECT GREATEST(:cap - jobs, 0) FROM in_flight)
        FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE jobs SET stage = '{Stage.dispatched.value}',
                        status = '{LEGACY_STATUS[Stage.dispatched]}',
                        dispatched_at = now(),
                        deadline_at = now() + make_interval(secs => :queue_timeout_s),
                        next_attempt_at = NULL,
                        started_at = NULL,
                        updated_at = now()
        FROM ready WHERE jobs.id = ready.id
        RETURNING jobs.id, jobs.user_id, jobs.chat_id, jobs.request_id,
                  COALESCE(jobs.retry_count, 0) AS retry_count, jobs.workflow_type,
                  jobs.prompt, jobs.image_path, jobs.seed, jobs.created_at, jobs.dispatched_at
    ), recorded AS (
        INSERT INTO job_transitions (job_id, from_stage, to_stage, attempt, reason, event_id)
        SELECT id, '{Stage.waiting.value}', '{Stage.dispatched.value}', retry_count + 1,
               'dispatched', NULL
        FROM moved
    )
    SELECT moved.id, moved.user_id, moved.chat_id, moved.request_id, moved.retry_count,
           moved.workflow_type, moved.prompt, moved.image_path, moved.seed,
           1 + (SELECT count(*) FROM jobs ahead
                WHERE ahead.workflow_type = moved.workflow_type
                  AND ahead.stage = '{Stage.dispatched.value}'
                  AND (ahead.dispatched_at, ahead.id) < (moved.dispatched_at, moved.id))
             + (SELECT count(*) FROM moved earlier
                WHERE earlier.workflow_type = moved.workflow_type AND earlier.id < moved.id)
             AS position,
           (SELECT count(*) FROM jobs busy
            WHERE busy.workflow_type = moved.workflow_type
              AND busy.stage = '{Stage.processing.value}') AS busy_runners,
           ARRAY(SELECT done.duration_ms FROM jobs done
                 WHERE done.workflow_type = moved.workflow_type
                   AND done.duration_ms IS NOT NULL
                 ORDER BY done.finished_at DESC LIMIT :eta_sample) AS recent_durations_ms
    FROM moved
    ORDER BY moved.created_at, moved.id
    """
)
"""A user's dispatch in one statement, the user's lock held: their oldest ready jobs, as many
as they have free slots (`domain.free_slots`), move to `dispatched` with a transition each.

The statement sees the table as it was before it, so a job's position counts, besides the
jobs dispatched earlier, the ones this same statement dispatched ahead of it. A dispatch for
another user committing at the same moment is not counted (it was not before, either): then the
position is an estimate, as the ETA always is."""


@dataclass(frozen=True)
class FromNow:
    """A time `seconds` after the transaction's clock (`now()`), as the database reckons it."""

    seconds: float = 0.0


NOW = FromNow()


_CLAIM_MOVED = f""", claimed AS (
            INSERT INTO {INBOX.name} (event_id, event_type)
            SELECT CAST(:claim_id AS uuid), :claim_type FROM moved
        )"""
"""No ON CONFLICT: a mark taken already fails the whole statement, the move with it."""
UNIQUE_VIOLATION = "23505"


@functools.cache
def _move_shape(to: Stage, columns: tuple[tuple[str, bool], ...], *, claim: bool) -> TextClause:
    """The statement of one kind of move: the job's update, guarded by the facts the move was
    decided on, and its transition (with `claim`, the event's inbox mark too, written only if
    the move applied); one per shape, so it is built and compiled once."""
    sets = [
        f"{name} = now() + make_interval(secs => CAST(:set_{name} AS double precision))"
        if from_now
        else f"{name} = :set_{name}"
        for name, from_now in columns
    ]
    return text(
        f"""
        WITH moved AS (
            UPDATE jobs SET stage = :to_stage, status = '{LEGACY_STATUS[to]}',
                            updated_at = now(){"".join(", " + set_ for set_ in sets)}
            WHERE id = :job_id AND stage = :from_stage AND COALESCE(retry_count, 0) = :retry_count
            RETURNING id, user_id, chat_id, request_id
        ), recorded AS (
            INSERT INTO job_transitions (job_id, from_stage, to_stage, attempt, reason, event_id)
            SELECT id, :from_stage, :to_stage, CAST(:attempt AS integer), :reason,
                   CAST(:event_id AS uuid)
            FROM moved
        ){_CLAIM_MOVED if claim else ""}
        SELECT id, user_id, chat_id, request_id FROM moved
        """
    )


def _move_statement(to: Stage, changes: dict[str, object], *, claim: bool) -> TextClause:
    unknown = set(changes) - set(JOBS.c.keys()) - {"stage", "status", "updated_at"}
    if unknown or {"stage", "status", "updated_at"} & set(changes):
        raise ValueError(f"a move cannot set {sorted(changes)}")
    return _move_shape(
        to,
        tuple((name, isinstance(value, FromNow)) for name, value in changes.items()),
        claim=claim,
    )


class JobsRepository:
    """The lifecycle's reads and writes, on the unit of work's connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    @classmethod
    async def of(cls, session: AsyncSession) -> JobsRepository:
        return cls(await session.connection())

    # --- locks

    async def lock_user(self, user_id: int) -> None:
        """Wait for, then hold until commit, the right to change this user's jobs."""
        await self.connection.execute(_LOCK_USER, {"space": USER_LOCK_SPACE, "user_id": user_id})

    async def try_lock_user(self, user_id: int) -> bool:
        locked = await self.connection.execute(
            _TRY_LOCK_USER, {"space": USER_LOCK_SPACE, "user_id": user_id}
        )
        return bool(locked.scalar_one())

    async def lock_owner(self, job_id: int) -> int | None:
        """Lock the job's owner (an owner never changes) and say who it is; None for jobs
        jobs does not know and pre-lifecycle ones."""
        owner = await self.connection.execute(
            _LOCK_OWNER, {"space": USER_LOCK_SPACE, "job_id": job_id}
        )
        row = owner.first()
        return None if row is None else int(row.user_id)

    async def claim_and_lock_user(self, event: RawEnvelope, user_id: int) -> bool:
        """Mark `event` handled and lock `user_id`; False (nothing done) for a duplicate."""
        locked = await self.connection.execute(
            _CLAIM_AND_LOCK_USER,
            {
                "event_id": event.id,
                "event_type": event.type,
                "space": USER_LOCK_SPACE,
                "user_id": user_id,
            },
        )
        return locked.first() is not None

    async def claim_and_lock_owner(self, event: RawEnvelope, job_id: int) -> int | None:
        """Mark `event` handled and lock the job's owner, who is returned; None for a duplicate
        or a job jobs does not know (roll back then: the mark may have been written)."""
        locked = await self.connection.execute(
            _CLAIM_AND_LOCK_OWNER,
            {
                "event_id": event.id,
                "event_type": event.type,
                "space": USER_LOCK_SPACE,
                "job_id": job_id,
            },
        )
        row = locked.first()
        return None if row is None else int(row.user_id)

    async def lock_job(self, job_id: int) -> JobRow | None:
        """The job row, locked until commit (its owner's lock first); None if unknown."""
        found = (await self.connection.execute(_LOCK_JOB, {"job_id": job_id})).first()
        if found is None:
            return None
        row = found._mapping
        return JobRow(
            id=row["id"],
            user_id=row["user_id"],
            chat_id=row["chat_id"],
            request_id=row["request_id"],
            stage=row["stage"],
            retry_count=row["retry_count"] or 0,
            workflow_type=row["workflow_type"],
            prompt=row["prompt"],
            image_path=row["image_path"],
            seed=row["seed"],
            deadline_at=row["deadline_at"],
            debited_at=row["debited_at"],
            now=row["now"],
        )

    # --- requests

    async def request_state(
        self, request_id: uuid.UUID, user_id: int, preset_id: int | None
    ) -> RequestState:
        """The request's job if it has one, the user's unfinished jobs, and the preset."""
        row = (
            await self.connection.execute(
                _REQUEST_STATE,
                {"request_id": request_id, "user_id": user_id, "preset_id": preset_id},
            )
        ).one()
        preset = None
        if row.preset_id is not None:
            preset = PresetFacts(
                id=row.preset_id,
                prompt=row.prompt or "",
                price=row.price,
                workflow_type=row.workflow_type or "",
                enabled=row.enabled,
            )
        return RequestState(
            existing_job=row.existing_job,
            unfinished_jobs=int(row.unfinished_jobs),
            preset=preset,
            next_job_id=int(row.next_job_id),
            now=row.now,
        )

    async def insert_job(
        self, job: NewJob, event_id: uuid.UUID | None, announce: Outgoing | None = None
    ) -> int | None:
        """The new job's id, its `requested` transition recorded (and `announce` written to the
        outbox); None when this request already has a job (a duplicate)."""
        values = {
            "job_id": job.id,
            "request_id": job.request_id,
            "user_id": job.user_id,
            "telegram_id": job.telegram_id,
            "chat_id": job.chat_id,
            "language": job.language,
            "preset_id": job.preset_id,
            "prompt": job.prompt,
            "image_path": job.image_key,
            "price": job.price,
            "workflow_type": job.workflow_type,
            "seed": job.seed,
            "deadline_at": job.payment_deadline,
            "event_id": event_id,
        }
        if announce is None:
            inserted = await self.connection.execute(_INSERT_JOB, values)
        else:
            inserted = await self.connection.execute(
                _INSERT_JOB_ANNOUNCED,
                {
                    **values,
                    "outbox_id": announce.envelope.id,
                    "routing_key": announce.routing_key,
                    "envelope": announce.envelope.model_dump_json(),
                },
            )
        return inserted.scalar_one_or_none()

    # --- stage changes

    async def move(
        self,
        job_id: int,
        facts: JobFacts,
        to: Stage,
        *,
        reason: str,
        event_id: uuid.UUID | None,
        claiming: RawEnvelope | None = None,
        **changes: object,
    ) -> Moved | None:
        """Change the job's stage (and the seed's status with it) and record the transition,
        in one statement, if the job is still as `facts` say (the facts its move was decided
        on); None, and nothing changed, if it is not.

        With `claiming`, the same statement marks that event handled; None, and nothing
        changed, if it was handled already (on an autocommitted connection: in a transaction
        that failure would end it). `changes` are further columns; a `FromNow` value is
        computed by the database."""
        statement = _move_statement(to, changes, claim=claiming is not None)
        values: dict[str, object] = {
            "job_id": job_id,
            "from_stage": facts.stage.value,
            "retry_count": facts.retry_count,
            "to_stage": to.value,
            "attempt": facts.attempt,
            "reason": reason[:100],
            "event_id": event_id,
        }
        for name, value in changes.items():
            values[f"set_{name}"] = value.seconds if isinstance(value, FromNow) else value
        if claiming is not None:
            values["claim_id"], values["claim_type"] = claiming.id, claiming.type
        try:
            row = (await self.connection.execute(statement, values)).first()
        except IntegrityError as exc:
            if claiming is None or getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
                raise
            return None  # handled already
        return None if row is None else Moved(row.id, row.user_id, row.chat_id, row.request_id)

    async def note_debited(self, job_id: int, now: datetime) -> None:
        """Remember a debit that moved nothing (billing refunds it), once."""
        await self.connection.execute(
            update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.debited_at.is_(None))
            .values(debited_at=now, updated_at=func.now())
        )

    async def dispatch(
        self, user_id: int, cap: int, queue_timeout_s: float, eta_sample: int
    ) -> list[Dispatched]:
        """Hand the user's oldest ready jobs to the GPU queues, up to their free slots."""
        rows = await self.connection.execute(
            _DISPATCH,
            {
                "user_id": user_id,
                "cap": cap,
                "queue_timeout_s": float(queue_timeout_s),
                "eta_sample": eta_sample,
            },
        )
        return [_dispatched(row._mapping) for row in rows]

    # --- the loops

    async def users_with_ready_jobs(self, cap: int, limit: int) -> list[UserQueue]:
        """Users under the cap with a paid job whose turn may have come, fewest in flight first."""
        waiting = (
            select(Job.user_id, func.min(Job.created_at).label("oldest"))
            .where(
                Job.stage == Stage.waiting.value,
                (Job.next_attempt_at.is_(None)) | (Job.next_attempt_at <= func.now()),
            )
            .group_by(Job.user_id)
            .subquery()
        )
        in_flight = (
            select(func.count())
            .where(
                Job.user_id == waiting.c.user_id,
                Job.stage.in_([stage.value for stage in IN_FLIGHT]),
            )
            .scalar_subquery()
        )
        users = select(waiting.c.user_id, in_flight.label("in_flight"), waiting.c.oldest).subquery()
        rows = await self.connection.execute(
            select(users)
            .where(users.c.in_flight < cap)
            .order_by(users.c.in_flight, users.c.oldest, users.c.user_id)
            .limit(limit)
        )
        return [UserQueue(row.user_id, row.in_flight, row.oldest) for row in rows]

    async def overdue_jobs(self, limit: int) -> list[tuple[int, int]]:
        """(job id, user id) of attempts past their deadline."""
        rows = await self.connection.execute(
            select(Job.id, Job.user_id)
            .where(
                Job.stage.in_([stage.value for stage in WITH_DEADLINE]),
                Job.deadline_at < func.now(),
            )
            .order_by(Job.deadline_at)
            .limit(limit)
        )
        return [(row.id, row.user_id) for row in rows]

    # --- reads for the gateway

    async def recent_jobs(self, user_id: int, limit: int) -> list[HistoryRow]:
        rows = await self.connection.execute(
            select(
                JOBS.c.id,
                JOBS.c.stage,
                JOBS.c.status,
                JOBS.c.prompt,
                JOBS.c.preset_id,
                JOBS.c.price,
                JOBS.c.result_path,
                JOBS.c.error,
                JOBS.c.created_at,
                JOBS.c.updated_at,
            )
            .where(JOBS.c.user_id == user_id)
            .order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc())
            .limit(limit)
        )
        return [
            HistoryRow(
                id=row.id,
                stage=row.stage,
                status=row.status.value if row.status is not None else None,
                prompt=row.prompt,
                preset_id=row.preset_id,
                price=row.price,
                result_path=row.result_path,
                error=row.error,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in rows
        ]


def _dispatched(row: RowMapping) -> Dispatched:
    return Dispatched(
        id=row["id"],
        user_id=row["user_id"],
        chat_id=row["chat_id"],
        request_id=row["request_id"],
        retry_count=row["retry_count"],
        workflow_type=row["workflow_type"],
        prompt=row["prompt"],
        image_path=row["image_path"],
        seed=row["seed"],
        position=int(row["position"]),
        busy_runners=int(row["busy_runners"]),
        recent_durations_ms=[int(value) for value in row["recent_durations_ms"]],
    )


def deadline(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


class CatalogRepository:
    """The presets table; imports hold `lock_catalog` so two never interleave."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_catalog(self) -> None:
        await self.session.execute(select(func.pg_advisory_xact_lock(*CATALOG_LOCK)))

    async def all_presets(self) -> Sequence[Preset]:
        """Every preset in display order: category, then order_index."""
        presets = await self.session.execute(
            select(Preset).order_by(Preset.category, Preset.order_index, Preset.id)
        )
        return presets.scalars().all()

    async def upsert(self, fields: dict[str, Any]) -> str:
        """Insert or update the preset named `fields["name"]` in its category.

        No unique constraint backs (category, name): existing databases may hold duplicates,
        so the first of them (lowest id) is the one updated; `lock_catalog` prevents races.
        """
        existing = (
            (
                await self.session.execute(
                    select(Preset)
                    .where(Preset.category == fields["category"], Preset.name == fields["name"])
                    .order_by(Preset.id)
                    .limit(1)
                )
            )
            .scalars()
            .first()
        )
        if existing is None:
            self.session.add(Preset(**fields))
            await self.session.flush()
            return "created"
        current = {name: getattr(existing, name) for name in fields}
        if current == fields:
            return "unchanged"
        for name, value in fields.items():
            setattr(existing, name, value)
        await self.session.flush()
        return "updated"
