"""Operations: dead-letter queues (list, show, replay, purge), each workflow's queue (depth,
ETA, pause and resume) and the GPU runners, in the API (`/api/v1/dead-letters`,
`/api/v1/workflows`, `/api/v1/runners`) and the panel (`/panel/operations`).

The dead letters belong to no service but the broker, so a replay or a purge is not a command to
an owner: it is recorded in the audit log like one (operator, reason, idempotency key), done
here once per key through `messaging.dead_letters` (the code `imagebot dlq` runs), and its entry
settled with what it did. The queues are jobs' to tell (`jobs.queue_stats`).
"""

import uuid
from datetime import datetime
from typing import Annotated, Any, cast
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from backend_api.api import (
    COMMAND_RESPONSES,
    ERRORS,
    CommandStatus,
    IdempotencyKey,
    OffsetQuery,
    Page,
    Reason,
    command_answer,
    guards,
)
from backend_api.auth import Operators
from backend_api.commands import AuditRecord, Commands, IdempotencyConflictError, settle
from backend_api.panel import Panel, form_key, form_reason, form_text
from backend_api.reads import Owners
from backend_api.runners import Runners, RunnerView
from backend_api.runners import register as register_runners
from backend_api.settings import Role
from contracts.events import (
    WORKFLOW_TYPES,
    WorkflowPaused,
    WorkflowPauseRequested,
    WorkflowResumed,
    WorkflowResumeRequested,
    WorkflowType,
)
from contracts.rpc import QueueStats, WorkflowQueues
from messaging.dead_letters import (
    BROKER_HEADER_PREFIXES,
    BROKER_HEADERS,
    DeadLetter,
    DeadLetterError,
    DeadLetterQueues,
    select,
)
from messaging.rpc import RpcClient
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

REPLAY = "dlq.replay"
PURGE = "dlq.purge"
PAUSE = "workflow.pause"
RESUME = "workflow.resume"
SHOWN_MAX = 200
QueueName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="A DLQ, its queue, or a short name (jobs, gpu.qwen_edit_2511)",
        examples=["jobs", "gpu.qwen_edit_2511"],
    ),
]
MessageKey = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]


class DeadLetterQueueView(BaseModel):
    dlq: str
    count: int
    oldest: datetime | None
    """The oldest first death of its messages."""
    reasons: dict[str, int]
    """How many died last for each reason (delivery_limit, rejected, ...)."""


class DeathView(BaseModel):
    reason: str | None
    queue: str | None
    time: datetime | None
    count: int


class DeadLetterView(BaseModel):
    key: str
    """The message id, or `sha256:` and a digest of its body when it has none."""
    event_type: str | None
    queue: str | None
    """The queue it died in last: where a replay sends it."""
    reason: str | None
    died_at: datetime | None
    first_death: DeathView | None
    deaths: int
    replays: int
    headers: dict[str, Any]
    """Its own headers and ours, not the broker's."""
    envelope: dict[str, Any] | None
    """The event envelope; None when the body is not one (see `body`)."""
    body: str | None
    """The first 2,000 characters of a body that is not an envelope."""

    @classmethod
    def of(cls, letter: DeadLetter) -> "DeadLetterView":
        envelope = letter.envelope
        first = letter.first_death
        return cls(
            key=letter.key,
            event_type=letter.event_type,
            queue=letter.queue,
            reason=letter.reason,
            died_at=letter.died_at,
            first_death=DeathView(
                reason=first.reason, queue=first.queue, time=first.time, count=first.count
            )
            if first
            else None,
            deaths=letter.deaths,
            replays=letter.replays,
            headers={
                key: _json_safe(value)
                for key, value in letter.headers.items()
                if key not in BROKER_HEADERS and not key.startswith(BROKER_HEADER_PREFIXES)
            },
            envelope=envelope.model_dump(mode="json") if envelope else None,
            body=None if envelope else letter.body[:2000].decode(errors="replace"),
        )


class Replay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: Annotated[list[MessageKey], Field(min_length=1, max_length=1000)] | None = None
    """Only these messages (keys); all in the DLQ when left out."""
    event_type: Annotated[str, Field(max_length=100, pattern=r"^[a-z0-9_.]+$")] | None = None
    """Only messages of this event type."""
    wait_s: Annotated[float, Field(ge=0, le=10)] = 0
    """Seconds to watch for replayed messages that die again (0: not watched)."""
    reason: Reason


class Purge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: Annotated[list[MessageKey], Field(min_length=1, max_length=1000)] | None = None
    """Only these messages (keys); every message in the DLQ when left out."""
    reason: Reason


class QueueChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class DeadLetterActions:
    """Replays and purges, each audited and done once per idempotency key."""

    def __init__(self, queues: DeadLetterQueues, commands: Commands) -> None:
        self.queues = queues
        self._commands = commands

    async def entry(self, key: uuid.UUID) -> AuditRecord | None:
        return await self._commands.entry(key)

    def dlq(self, name: str) -> str:
        """The DLQ `name` means; 404 when none."""
        try:
            return self.queues.resolve(name)
        except DeadLetterError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc

    async def replay(
        self,
        key: uuid.UUID,
        operator: str,
        dlq: str,
        ids: list[str] | None,
        event_type: str | None,
        wait_s: float,
        reason: str,
    ) -> AuditRecord:
        async def act() -> tuple[str, dict[str, Any]]:
            try:
                report = await self.queues.replay(dlq, select(ids or (), event_type), wait_s=wait_s)
            except DeadLetterError as exc:
                return "refused", {"error": str(exc)}
            missing = sorted(set(ids or ()) - set(report.present))
            return "applied", {
                "found": report.found,
                "matched": len(report.matched),
                "replayed": report.replayed,
                "refused": report.refused,
                "not_found": missing,
                "died_again": report.died_again,
                "left": report.left,
            }

        payload = {"ids": ids, "event_type": event_type, "wait_s": wait_s}
        return await self._commands.perform(key, operator, REPLAY, dlq, payload, reason, act)

    async def purge(
        self, key: uuid.UUID, operator: str, dlq: str, ids: list[str] | None, reason: str
    ) -> AuditRecord:
        async def act() -> tuple[str, dict[str, Any]]:
            try:
                purged = await self.queues.purge(dlq, ids)
            except DeadLetterError as exc:
                return "refused", {"error": str(exc)}
            return "applied", {"purged": purged}

        payload = {"ids": ids}
        return await self._commands.perform(key, operator, PURGE, dlq, payload, reason, act)

    async def summaries(self) -> list[DeadLetterQueueView]:
        try:
            summaries = await self.queues.summaries()
        except DeadLetterError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
        return [
            DeadLetterQueueView(
                dlq=summary.dlq,
                count=summary.count,
                oldest=summary.oldest,
                reasons=dict(summary.reasons),
            )
            for summary in summaries
        ]

    async def letters(self, dlq: str, limit: int) -> list[DeadLetter]:
        try:
            return await self.queues.show(dlq, limit)
        except DeadLetterError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc


class QueueReads(Owners):
    """jobs' view of its workflow queues."""

    async def queues(self) -> WorkflowQueues:
        return await self._call(QueueStats(), WorkflowQueues)


class QueueCommands:
    """Pause and resume a workflow's queue: commands to jobs, which owns dispatch."""

    def __init__(self, commands: Commands) -> None:
        self._commands = commands

    async def pause(
        self, key: uuid.UUID, operator: str, workflow: WorkflowType, reason: str
    ) -> AuditRecord:
        command = WorkflowPauseRequested(
            request_id=key, operator=operator, workflow_type=workflow, reason=reason
        )
        return await self._commands.submit(key, operator, PAUSE, workflow, {}, reason, command)

    async def resume(
        self, key: uuid.UUID, operator: str, workflow: WorkflowType, reason: str
    ) -> AuditRecord:
        command = WorkflowResumeRequested(
            request_id=key, operator=operator, workflow_type=workflow, reason=reason
        )
        return await self._commands.submit(key, operator, RESUME, workflow, {}, reason, command)


def register_answers(runtime: ServiceRuntime) -> None:
    """jobs' answers to a pause or a resume settle their audit entries."""

    @runtime.consumer.on(WorkflowPaused)
    async def paused(event: WorkflowPaused, uow: UnitOfWork) -> None:
        outcome = {"already": event.already, "waiting": event.waiting}
        await settle(uow, event.request_id, "applied", outcome)

    @runtime.consumer.on(WorkflowResumed)
    async def resumed(event: WorkflowResumed, uow: UnitOfWork) -> None:
        outcome = {"already": event.already, "waiting": event.waiting}
        await settle(uow, event.request_id, "applied", outcome)


def api_router(
    actions: DeadLetterActions,
    reads: QueueReads,
    queues: QueueCommands,
    runners: Runners,
    operators: Operators,
) -> APIRouter:
    guard = guards(operators)
    Operator = Annotated[str, guard.viewer]
    Admin = Annotated[str, guard.admin]
    router = APIRouter(prefix="/api/v1", tags=["operations"], responses=ERRORS)
    unknown: dict[int | str, dict[str, Any]] = {404: {"description": "No such queue"}}

    @router.get("/dead-letters")
    async def dead_letter_queues(
        _: Operator,
        offset: OffsetQuery = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Page[DeadLetterQueueView]:
        """Every dead-letter queue: how many messages, the oldest first death, the reasons."""
        views = await actions.summaries()
        return Page(
            items=views[offset : offset + limit], total=len(views), offset=offset, limit=limit
        )

    @router.get("/dead-letters/{queue}", responses=unknown)
    async def dead_letters(
        _: Operator,
        queue: QueueName,
        offset: Annotated[int, Query(ge=0, le=SHOWN_MAX)] = 0,
        limit: Annotated[int, Query(ge=1, le=SHOWN_MAX)] = 20,
    ) -> Page[DeadLetterView]:
        """The messages of a DLQ, oldest first, as they are (reading moves nothing); at most
        the first 200 are read, `total` counts those."""
        letters = await actions.letters(actions.dlq(queue), SHOWN_MAX)
        shown = [DeadLetterView.of(letter) for letter in letters[offset : offset + limit]]
        return Page(items=shown, total=len(letters), offset=offset, limit=limit)

    @router.post("/dead-letters/{queue}/replay", responses={**COMMAND_RESPONSES, **unknown})
    async def replay(
        who: Admin,
        queue: QueueName,
        body: Replay,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Send the DLQ's messages (or the `ids`) back to the queue each died in, once each.
        Done by the backend API itself (the broker owns dead letters), audited, once per
        idempotency key; the outcome lists what was replayed and what was left and why. Admins."""
        dlq = actions.dlq(queue)
        submitted = actions.replay(
            idempotency_key, who, dlq, body.ids, body.event_type, body.wait_s, body.reason.strip()
        )
        return await command_answer(submitted, response)

    @router.post("/dead-letters/{queue}/purge", responses={**COMMAND_RESPONSES, **unknown})
    async def purge(
        who: Admin,
        queue: QueueName,
        body: Purge,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Delete the DLQ's messages (or only the `ids`) for good; audited, once per
        idempotency key. Admins."""
        dlq = actions.dlq(queue)
        submitted = actions.purge(idempotency_key, who, dlq, body.ids, body.reason.strip())
        return await command_answer(submitted, response)

    @router.get("/workflows")
    async def workflows(_: Operator) -> WorkflowQueues:
        """Each workflow's queue, as jobs sees it: jobs waiting, dispatched, running, recent
        durations and the ETA of a job queued now."""
        return await reads.queues()

    @router.get("/runners")
    async def gpu_runners(
        _: Operator,
        offset: OffsetQuery = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Page[RunnerView]:
        """The GPU runners by id, from their heartbeats: workflows, device, memory, current
        job, and whether each is up, unhealthy, stopping or gone (beats overdue)."""
        shown, total = await runners.page(offset, limit)
        return Page(items=shown, total=total, offset=offset, limit=limit)

    @router.post("/workflows/{workflow_type}/pause", responses=COMMAND_RESPONSES)
    async def pause(
        who: Admin,
        workflow_type: WorkflowType,
        body: QueueChange,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Pause a workflow's queue: its paid jobs wait in jobs (not dispatched, not failed),
        their users are told why; once per idempotency key. Admins."""
        submitted = queues.pause(idempotency_key, who, workflow_type, body.reason.strip())
        return await command_answer(submitted, response)

    @router.post("/workflows/{workflow_type}/resume", responses=COMMAND_RESPONSES)
    async def resume(
        who: Admin,
        workflow_type: WorkflowType,
        body: QueueChange,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Resume a paused workflow's queue: its waiting jobs are dispatched again, in order.
        Admins."""
        submitted = queues.resume(idempotency_key, who, workflow_type, body.reason.strip())
        return await command_answer(submitted, response)

    return router


class OperationsPages:
    """The panel's Operations page (DLQs, workflow queues) and each DLQ's page."""

    def __init__(
        self,
        panel: Panel,
        actions: DeadLetterActions,
        reads: QueueReads,
        queues: QueueCommands,
        runners: Runners,
    ) -> None:
        self._runners = runners
        self._panel = panel
        self._actions = actions
        self._reads = reads
        self._queues = queues

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/panel/operations", include_in_schema=False)
        router.add_api_route("", self.overview, methods=["GET"])
        router.add_api_route("/workflows/{workflow}", self.change_queue, methods=["POST"])
        router.add_api_route("/dead-letters/{queue}", self.dead_letters, methods=["GET"])
        router.add_api_route("/dead-letters/{queue}", self.act, methods=["POST"])
        return router

    async def overview(self, request: Request, done: str | None = None) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        return await self._overview(request, done=done)

    async def _overview(
        self,
        request: Request,
        *,
        done: str | None = None,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        role = self._panel.role(request)
        context = {
            "queues": await self._actions.summaries(),
            "workflows": (await self._reads.queues()).workflows,
            "runners": (await self._runners.page(0, 200))[0],
            "result": await self._result(done),
            "errors": errors or {},
            "form": form or {},
            "keys": {workflow: uuid.uuid4() for workflow in WORKFLOW_TYPES},
            "can_operate": role is not None and role >= Role.admin,
        }
        status_code = 422 if errors else 200
        return self._panel.render(request, "operations.html", context, status_code=status_code)

    async def _result(self, done: str | None) -> AuditRecord | None:
        if done is None:
            return None
        try:
            return await self._actions.entry(uuid.UUID(done))
        except ValueError:
            return None

    async def change_queue(self, request: Request, workflow: str) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.admin)
        if workflow not in WORKFLOW_TYPES:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        action = form_text(form.get("action"))
        reason, error = form_reason(form)
        if action not in ("pause", "resume"):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="pause or resume")
        if error is not None:
            return await self._overview(
                request, errors={"workflow": workflow, "reason": error}, form={"reason": reason}
            )
        key = form_key(form)
        operator = self._panel.operator(request)
        change = self._queues.pause if action == "pause" else self._queues.resume
        try:
            record = await change(key, operator, cast("WorkflowType", workflow), reason)
        except IdempotencyConflictError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="form sent twice") from exc
        return RedirectResponse(
            f"/panel/operations?{urlencode({'done': str(record.request_id)})}",
            status.HTTP_303_SEE_OTHER,
        )

    async def dead_letters(self, request: Request, queue: str, done: str | None = None) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        return await self._dead_letters(request, self._actions.dlq(queue), done=done)

    async def _dead_letters(
        self,
        request: Request,
        dlq: str,
        *,
        done: str | None = None,
        errors: dict[str, str] | None = None,
        form: dict[str, Any] | None = None,
    ) -> Response:
        result = await self._result(done)
        letters = await self._actions.letters(dlq, SHOWN_MAX)
        role = self._panel.role(request)
        context = {
            "dlq": dlq,
            "letters": [DeadLetterView.of(letter) for letter in letters],
            "result": result,
            "errors": errors or {},
            "form": form or {},
            "key": uuid.uuid4(),
            "can_operate": role is not None and role >= Role.admin,
        }
        return self._panel.render(
            request, "operations_dlq.html", context, status_code=422 if errors else 200
        )

    async def act(self, request: Request, queue: str) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.admin)
        dlq = self._actions.dlq(queue)
        ids = [text for value in form.getlist("ids") if (text := form_text(value))]
        action = form_text(form.get("action"))
        reason, error = form_reason(form)
        if action not in ("replay", "purge"):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="replay or purge")
        if error is not None:
            return await self._dead_letters(
                request, dlq, errors={"reason": error}, form={"reason": reason, "ids": ids}
            )
        key = form_key(form)
        operator = self._panel.operator(request)
        try:
            if action == "replay":
                record = await self._actions.replay(
                    key, operator, dlq, ids or None, None, 0, reason
                )
            else:
                record = await self._actions.purge(key, operator, dlq, ids or None, reason)
        except IdempotencyConflictError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="form sent twice") from exc
        where = f"/panel/operations/dead-letters/{quote(dlq)}"
        return RedirectResponse(
            f"{where}?{urlencode({'done': str(record.request_id)})}", status.HTTP_303_SEE_OTHER
        )


def register(
    runtime: ServiceRuntime,
    web: Any,
    panel: Panel,
    rpc: RpcClient,
    commands: Commands,
    operators: Operators,
) -> None:
    """The operations area: its API routes and panel pages on the backend API's FastAPI app,
    jobs' answers on its consumer."""
    register_answers(runtime)
    runners = register_runners(runtime)
    amqp_url = runtime.broker_settings.url.get_secret_value()
    actions = DeadLetterActions(DeadLetterQueues(amqp_url, runtime.topology), commands)
    reads = QueueReads(rpc)
    queues = QueueCommands(commands)
    web.include_router(api_router(actions, reads, queues, runners, operators))
    web.include_router(OperationsPages(panel, actions, reads, queues, runners).router())


def _json_safe(value: Any) -> Any:
    """A header's value as JSON: text for bytes, ISO 8601 for times, lists and tables inside."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
