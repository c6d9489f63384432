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

from sqlalchemy import (
    Integer,
    Interval,
    Select,
    String,
    Table,
    Uuid,
    bindparam,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.domain import (
    IN_FLIGHT,
    LEGACY_STATUS,
    UNFINISHED,
    WITH_DEADLINE,
    JobFacts,
    JobInputs,
    PresetFacts,
    Stage,
    UserQueue,
)
from jobs.models import Job, JobStatus, JobTransition, Preset, WorkflowPause
from messaging.unit_of_work import UnitOfWork

USER_LOCK_SPACE = 0x4A0B
"""First key of the two-key advisory locks jobs takes per user (`pg_advisory_xact_lock`)."""
CATALOG_LOCK = (0x4A0B, 0)
"""Serializes catalog imports (user ids start at 1)."""

JOBS = cast("Table", Job.__table__)
TRANSITIONS = cast("Table", JobTransition.__table__)
PAUSES = cast("Table", WorkflowPause.__table__)
NOT_PAUSED = ~exists().where(PAUSES.c.workflow_type == JOBS.c.workflow_type)
"""A job whose workflow's queue an operator has not paused (see `jobs.queues`): only those are
dispatched; the others wait."""
PRESETS = cast("Table", Preset.__table__)
_TRANSITION_COLUMNS = ["job_id", "from_stage", "to_stage", "attempt", "reason", "event_id"]
_JOB_COLUMNS = [
    JOBS.c[name]
    for name in (
        "id",
        "user_id",
        "chat_id",
        "request_id",
        "stage",
        "retry_count",
        "workflow_type",
        "prompt",
        "image_path",
        "seed",
        "deadline_at",
        "debited_at",
    )
]


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
    image_keys: tuple[str, ...]
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
    extra_image_paths: list[str] | None
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


def _dispatch() -> Select[Any]:
    user = bindparam("dispatch_user_id", type_=Integer())
    dispatched, waiting = Stage.dispatched.value, Stage.waiting.value
    in_flight = (
        select(func.count().label("jobs"))
        .where(JOBS.c.user_id == user, JOBS.c.stage.in_([stage.value for stage in IN_FLIGHT]))
        .cte("in_flight")
    )
    ready = (
        select(JOBS.c.id)
        .where(
            JOBS.c.user_id == user,
            JOBS.c.stage == waiting,
            or_(JOBS.c.next_attempt_at.is_(None), JOBS.c.next_attempt_at <= func.now()),
            NOT_PAUSED,
        )
        .order_by(JOBS.c.created_at, JOBS.c.id)
        .limit(
            select(
                func.greatest(bindparam("dispatch_cap", type_=Integer()) - in_flight.c.jobs, 0)
            ).scalar_subquery()
        )
        .with_for_update(skip_locked=True)
        .cte("ready")
    )
    moved = (
        update(JOBS)
        .where(JOBS.c.id == ready.c.id)
        .values(
            stage=dispatched,
            status=LEGACY_STATUS[Stage.dispatched],
            dispatched_at=func.now(),
            deadline_at=func.now() + bindparam("dispatch_queue_timeout", type_=Interval()),
            next_attempt_at=None,
            started_at=None,
            updated_at=func.now(),
        )
        .returning(
            JOBS.c.id,
            JOBS.c.user_id,
            JOBS.c.chat_id,
            JOBS.c.request_id,
            func.coalesce(JOBS.c.retry_count, 0).label("retry_count"),
            JOBS.c.workflow_type,
            JOBS.c.prompt,
            JOBS.c.image_path,
            JOBS.c.extra_image_paths,
            JOBS.c.seed,
            JOBS.c.created_at,
            JOBS.c.dispatched_at,
        )
        .cte("moved")
    )
    recorded = insert(TRANSITIONS).from_select(
        _TRANSITION_COLUMNS,
        select(
            moved.c.id,
            literal(waiting),
            literal(dispatched),
            moved.c.retry_count + 1,
            literal("dispatched"),
            null(),
        ),
    )
    ahead, earlier, busy, done = (
        JOBS.alias("ahead"),
        moved.alias("earlier"),
        JOBS.alias("busy"),
        JOBS.alias("done"),
    )
    position = (
        1
        + select(func.count())
        .select_from(ahead)
        .where(
            ahead.c.workflow_type == moved.c.workflow_type,
            ahead.c.stage == dispatched,
            tuple_(ahead.c.dispatched_at, ahead.c.id) < tuple_(moved.c.dispatched_at, moved.c.id),
        )
        .scalar_subquery()
        + select(func.count())
        .select_from(earlier)
        .where(earlier.c.workflow_type == moved.c.workflow_type, earlier.c.id < moved.c.id)
        .scalar_subquery()
    )
    busy_runners = (
        select(func.count())
        .select_from(busy)
        .where(
            busy.c.workflow_type == moved.c.workflow_type, busy.c.stage == Stage.processing.value
        )
        .scalar_subquery()
    )
    recent = func.array(  # ARRAY(SELECT ...): the workflow's latest durations, newest first
        select(done.c.duration_ms)
        .where(done.c.workflow_type == moved.c.workflow_type, done.c.duration_ms.is_not(None))
        .order_by(done.c.finished_at.desc())
        .limit(bindparam("dispatch_eta_sample", type_=Integer()))
        .scalar_subquery(),
        type_=ARRAY(Integer()),
    )
    return (
        select(
            moved.c.id,
            moved.c.user_id,
            moved.c.chat_id,
            moved.c.request_id,
            moved.c.retry_count,
            moved.c.workflow_type,
            moved.c.prompt,
            moved.c.image_path,
            moved.c.extra_image_paths,
            moved.c.seed,
            position.label("position"),
            busy_runners.label("busy_runners"),
            recent.label("recent_durations_ms"),
        )
        .order_by(moved.c.created_at, moved.c.id)
        .add_cte(recorded.cte("recorded"))
    )


_DISPATCH = _dispatch()
"""A user's dispatch in one statement, the user's lock held: their oldest ready jobs, as many
as they have free slots (the cap minus their jobs in flight), move to `dispatched` with a
transition each.

The statement sees the table as it was before it, so a job's position counts, besides the
jobs dispatched earlier, the ones this same statement dispatched ahead of it. A dispatch for
another user committing at the same moment is not counted (it was not before, either): then the
position is an estimate, as the ETA always is."""


@dataclass(frozen=True)
class FromNow:
    """A time `seconds` after the transaction's clock (`now()`), as the database reckons it."""

    seconds: float = 0.0


NOW = FromNow()


def _lock(user_id: Any) -> Any:
    return func.pg_advisory_xact_lock(USER_LOCK_SPACE, user_id)


Statement = tuple[Select[Any], dict[str, Any]]
"""A statement built once per shape, with its bound values for this use."""


def move_statement(
    job_id: int,
    facts: JobFacts,
    to: Stage,
    *,
    reason: str,
    event_id: uuid.UUID | None,
    **changes: object,
) -> Statement:
    """The job's stage change, guarded by the facts it was decided on, and its transition row:
    one statement, which changes nothing (and returns no row) if the job is not as `facts` say.
    `changes` are further columns; a `FromNow` value is computed by the database."""
    if {"stage", "status", "updated_at"} & set(changes) or set(changes) - set(JOBS.c.keys()):
        raise ValueError(f"a move cannot set {sorted(changes)}")
    shape = _move_shape(
        to, tuple((name, isinstance(value, FromNow)) for name, value in changes.items())
    )
    values: dict[str, Any] = {
        "move_job_id": job_id,
        "move_from_stage": facts.stage.value,
        "move_retry_count": facts.retry_count,
        "move_attempt": facts.attempt,
        "move_reason": reason[:100],
        "move_event_id": event_id,
    }
    for name, value in changes.items():
        values[f"set_{name}"] = (
            timedelta(seconds=value.seconds) if isinstance(value, FromNow) else value
        )
    return shape, values


@functools.cache
def _move_shape(to: Stage, columns: tuple[tuple[str, bool], ...]) -> Select[Any]:
    """One kind of move, with every value bound: built and compiled once per shape."""
    values: dict[str, Any] = {
        name: func.now() + bindparam(f"set_{name}", type_=Interval())
        if from_now
        else bindparam(f"set_{name}", type_=JOBS.c[name].type)
        for name, from_now in columns
    }
    moved = (
        update(JOBS)
        .where(
            JOBS.c.id == bindparam("move_job_id"),
            JOBS.c.stage == bindparam("move_from_stage"),
            func.coalesce(JOBS.c.retry_count, 0) == bindparam("move_retry_count"),
        )
        .values(stage=to.value, status=LEGACY_STATUS[to], updated_at=func.now(), **values)
        .returning(JOBS.c.id, JOBS.c.user_id, JOBS.c.chat_id, JOBS.c.request_id)
        .cte("moved")
    )
    recorded = insert(TRANSITIONS).from_select(
        _TRANSITION_COLUMNS,
        select(
            moved.c.id,
            bindparam("move_from_stage", type_=String()),
            literal(to.value),
            bindparam("move_attempt", type_=Integer()),
            bindparam("move_reason", type_=String()),
            bindparam("move_event_id", type_=Uuid()),
        ),
    )
    return select(moved).add_cte(recorded.cte("recorded"))


def _creation() -> Select[Any]:
    created = (
        pg_insert(JOBS)
        .values(
            {
                name: bindparam(f"new_{name}", type_=JOBS.c[name].type)
                for name in (
                    "id",
                    "request_id",
                    "user_id",
                    "telegram_id",
                    "chat_id",
                    "language",
                    "preset_id",
                    "prompt",
                    "image_path",
                    "extra_image_paths",
                    "price",
                    "workflow_type",
                    "seed",
                    "deadline_at",
                )
            }
            | {
                "stage": Stage.awaiting_payment.value,
                "status": JobStatus.queued,
                "retry_count": 0,
            }
        )
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(JOBS.c.id)
        .cte("created")
    )
    recorded = insert(TRANSITIONS).from_select(
        _TRANSITION_COLUMNS,
        select(
            created.c.id,
            literal(None, String()),
            literal(Stage.awaiting_payment.value),
            literal(1),
            literal("requested"),
            bindparam("new_event_id", type_=Uuid()),
        ),
    )
    return select(created.c.id).add_cte(recorded.cte("recorded"))


_CREATION = _creation()


def creation_statement(job: NewJob, event_id: uuid.UUID | None) -> Statement:
    """The new job, awaiting payment, and its `requested` transition; no row when the request
    has its job already."""
    return _CREATION, {
        "new_id": job.id,
        "new_request_id": job.request_id,
        "new_user_id": job.user_id,
        "new_telegram_id": job.telegram_id,
        "new_chat_id": job.chat_id,
        "new_language": job.language,
        "new_preset_id": job.preset_id,
        "new_prompt": job.prompt,
        "new_image_path": job.image_keys[0] if job.image_keys else None,
        "new_extra_image_paths": list(job.image_keys[1:]) or None,
        "new_price": job.price,
        "new_workflow_type": job.workflow_type,
        "new_seed": job.seed,
        "new_deadline_at": job.payment_deadline,
        "new_event_id": event_id,
    }


_LOCK_USER = select(_lock(bindparam("user_id")))
_TRY_LOCK_USER = select(func.pg_try_advisory_xact_lock(USER_LOCK_SPACE, bindparam("user_id")))
_LOCK_OWNER = select(JOBS.c.user_id, _lock(JOBS.c.user_id)).where(
    JOBS.c.id == bindparam("job_id"), JOBS.c.stage.is_not(None), JOBS.c.user_id.is_not(None)
)
_JOB = select(*_JOB_COLUMNS, func.now().label("now")).where(
    JOBS.c.id == bindparam("job_id"), JOBS.c.stage.is_not(None)
)
_JOB_LOCKED = _JOB.with_for_update()
_INPUTS = select(
    *(
        JOBS.c[name]
        for name in (
            "stage",
            "user_id",
            "telegram_id",
            "chat_id",
            "language",
            "preset_id",
            "prompt",
            "workflow_type",
            "image_path",
            "extra_image_paths",
        )
    ),
    JOBS.c.debited_at.is_not(None).label("paid"),
).where(JOBS.c.id == bindparam("job_id"), JOBS.c.stage.is_not(None), JOBS.c.user_id.is_not(None))
_ONE = select(literal(1).label("one")).subquery("one")
_REQUEST_STATE = select(
    select(JOBS.c.id)
    .where(JOBS.c.request_id == bindparam("request_id"))
    .scalar_subquery()
    .label("existing_job"),
    select(func.count())
    .where(
        JOBS.c.user_id == bindparam("user_id"),
        JOBS.c.stage.in_([stage.value for stage in UNFINISHED]),
    )
    .scalar_subquery()
    .label("unfinished_jobs"),
    PRESETS.c.id.label("preset_id"),
    PRESETS.c.prompt,
    PRESETS.c.price,
    PRESETS.c.workflow_type,
    PRESETS.c.enabled,
    func.nextval(func.pg_get_serial_sequence("jobs", "id")).label("next_job_id"),
    func.now().label("now"),
).select_from(_ONE.outerjoin(PRESETS, PRESETS.c.id == bindparam("preset_id")))
"""Also draws the id the job will have if it is made (an unused id is a gap, as a
rolled-back insert would leave)."""


class JobsRepository:
    """The lifecycle's reads and writes, in the unit of work of the message at hand."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    # --- locks

    async def lock_user(self, user_id: int) -> None:
        """Wait for, then hold until commit, the right to change this user's jobs."""
        await self._uow.execute(_LOCK_USER, {"user_id": user_id})

    async def try_lock_user(self, user_id: int) -> bool:
        locked = await self._uow.execute(_TRY_LOCK_USER, {"user_id": user_id})
        return bool(locked.scalar_one())

    async def lock_owner(self, job_id: int) -> int | None:
        """Lock the job's owner (an owner never changes) and say who it is; None for jobs
        jobs does not know and pre-lifecycle ones."""
        row = (await self._uow.execute(_LOCK_OWNER, {"job_id": job_id})).first()
        return None if row is None else int(row.user_id)

    async def job(self, job_id: int, *, lock: bool = True) -> JobRow | None:
        """The job row (locked until commit, its owner's lock first, unless `lock` is off);
        None if unknown."""
        if lock:
            found = (await self._uow.execute(_JOB_LOCKED, {"job_id": job_id})).first()
        else:
            found = (await self._uow.read(_JOB, {"job_id": job_id})).first()
        if found is None:
            return None
        row = found._mapping
        return JobRow(**{**row, "retry_count": row["retry_count"] or 0})

    async def inputs(self, job_id: int) -> JobInputs | None:
        """Where the job stands and what it was asked on (for a retry); None if unknown."""
        row = (await self._uow.execute(_INPUTS, {"job_id": job_id})).first()
        if row is None:
            return None
        return JobInputs(
            stage=Stage(row.stage),
            user_id=row.user_id,
            telegram_id=row.telegram_id,
            chat_id=row.chat_id,
            language=row.language,
            preset_id=row.preset_id,
            prompt=row.prompt,
            workflow_type=row.workflow_type,
            images=tuple(key for key in (row.image_path, *(row.extra_image_paths or ())) if key),
            paid=row.paid,
        )

    # --- requests

    async def request_state(
        self, request_id: uuid.UUID, user_id: int, preset_id: int | None
    ) -> RequestState:
        """The request's job if it has one, the user's unfinished jobs, and the preset."""
        row = (
            await self._uow.execute(
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

    # --- stage changes

    async def move(
        self,
        job_id: int,
        facts: JobFacts,
        to: Stage,
        *,
        reason: str,
        event_id: uuid.UUID | None,
        **changes: object,
    ) -> Moved | None:
        """`move_statement` in this unit's transaction: what moved, or None."""
        statement = move_statement(job_id, facts, to, reason=reason, event_id=event_id, **changes)
        row = (await self._uow.execute(*statement)).first()
        return None if row is None else Moved(row.id, row.user_id, row.chat_id, row.request_id)

    async def note_debited(self, job_id: int) -> None:
        """Remember a debit that moved nothing (billing refunds it), once."""
        await self._uow.execute(
            update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.debited_at.is_(None))
            .values(debited_at=func.now(), updated_at=func.now())
        )

    async def dispatch(
        self, user_id: int, cap: int, queue_timeout_s: float, eta_sample: int
    ) -> list[Dispatched]:
        """Hand the user's oldest ready jobs to the GPU queues, up to their free slots."""
        rows = await self._uow.execute(
            _DISPATCH,
            {
                "dispatch_user_id": user_id,
                "dispatch_cap": cap,
                "dispatch_queue_timeout": timedelta(seconds=queue_timeout_s),
                "dispatch_eta_sample": eta_sample,
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
                NOT_PAUSED,
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
        rows = await self._uow.read(
            select(users)
            .where(users.c.in_flight < cap)
            .order_by(users.c.in_flight, users.c.oldest, users.c.user_id)
            .limit(limit)
        )
        return [UserQueue(row.user_id, row.in_flight, row.oldest) for row in rows]

    async def overdue_jobs(self, limit: int) -> list[tuple[int, int]]:
        """(job id, user id) of attempts past their deadline."""
        rows = await self._uow.read(
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
        rows = await self._uow.read(
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
        extra_image_paths=row["extra_image_paths"],
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
