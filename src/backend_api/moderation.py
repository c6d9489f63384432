"""Moderation: the gateway's queue of held requests (approve or reject, the held photo shown),
each user's standing, moderation decisions and farming signals, and bans. In the API
(`/api/v1/moderation/...`) and the panel (`/panel/moderation`). Every public moderation outcome
(refusals, holds, decisions, restrictions) is counted here for Prometheus
(`imagebot_moderation_outcomes_total`), so refusal rates can be watched and alerted on.

The gateway owns the queue, the restrictions and the moderation log, and billing the farming
flags: reads are their request/reply answers (`bot_gateway.list_held`, `held_preview`,
`user_moderation`; `billing.farming_signals`), every write a command to the gateway
(ModerationDecisionRequested, UserRestrictionRequested) with an idempotency key, the operator
and a reason, applied once there and answered by an event that settles the audit entry.
"""

import base64
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict

from backend_api.api import (
    COMMAND_RESPONSES,
    ERRORS,
    JSON_SAFE_MAX,
    CommandStatus,
    IdempotencyKey,
    LimitQuery,
    OffsetQuery,
    Page,
    Reason,
    command_answer,
    guards,
)
from backend_api.auth import Operators
from backend_api.commands import AuditRecord, Commands, settle
from backend_api.panel import PAGE, Panel, form_key, form_reason, form_text, pager
from backend_api.reads import Owners
from backend_api.settings import Role
from contracts.events import (
    ModerationDecided,
    ModerationDecisionRefused,
    ModerationDecisionRequested,
    ModerationHeld,
    ModerationRefused,
    UserRestricted,
    UserRestrictionRefused,
    UserRestrictionRequested,
)
from contracts.rpc import (
    FarmingSignals,
    GetFarmingSignals,
    GetHeldPreview,
    GetUserModeration,
    HeldPage,
    HeldPreview,
    HeldRecord,
    ListHeld,
    UserModeration,
)
from messaging.rpc import BROKER_TROUBLE, RpcClient, RpcRefusedError
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

APPROVE = "moderation.approve"
REJECT = "moderation.reject"
BAN = "user.ban"
UNBAN = "user.unban"
STATES = ("held", "approved", "rejected", "all")
ItemId = Annotated[int, Path(gt=0, le=JSON_SAFE_MAX)]
TelegramIdPath = Annotated[int, Path(gt=0, le=JSON_SAFE_MAX)]
PhotoIndex = Annotated[int, Path(ge=0, le=2)]
OUTCOMES = Counter(
    "imagebot_moderation_outcomes_total",
    "Moderation outcomes the gateway announced: refused, held, approved, rejected (inputs and "
    "results), banned, suspended, unbanned (accounts).",
    ["outcome", "subject", "category"],
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such held request"}}
PHOTO: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "The photo, downscaled (JPEG)"},
    404: {"description": "No such held request or photo, or no longer stored"},
}


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["approve", "reject"]
    """approve: the job is requested as the user asked (at the price they were shown);
    reject: the user is told, nothing is charged."""
    reason: Reason


class Restriction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    """Kept in the moderation log; a ban's reason is what the bot tells the user."""


class UserModerationView(BaseModel):
    moderation: UserModeration
    """The gateway's: standing, recent decisions, held requests, shared uploads."""
    farming: FarmingSignals
    """Billing's: paid ever, welcome withheld, the shared-upload flag, the weekly bonus."""


class ModerationReads(Owners):
    """The gateway's queue and standing, billing's farming signals."""

    async def held(self, request: ListHeld) -> HeldPage:
        return await self._call(request, HeldPage)

    async def preview(self, item_id: int, index: int) -> bytes:
        """A held photo's JPEG; 404 when the item, the photo or its stored object is gone."""
        request = GetHeldPreview(item_id=item_id, index=index)
        try:
            preview = await self._rpc.call(request, HeldPreview)
        except RpcRefusedError as exc:
            if exc.code in ("unknown_item", "gone"):
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail=exc.code) from exc
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail=exc.code) from exc
        except (TimeoutError, *BROKER_TROUBLE) as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="no answer") from exc
        return base64.b64decode(preview.data_base64)

    async def user(self, telegram_id: int) -> UserModerationView:
        return UserModerationView(
            moderation=await self._call(GetUserModeration(telegram_id=telegram_id), UserModeration),
            farming=await self._call(GetFarmingSignals(telegram_id=telegram_id), FarmingSignals),
        )


class ModerationCommands:
    """Decisions on held requests and bans: commands to the gateway."""

    def __init__(self, commands: Commands) -> None:
        self._commands = commands

    async def decide(
        self,
        key: uuid.UUID,
        operator: str,
        item_id: int,
        verdict: Literal["approve", "reject"],
        reason: str,
    ) -> AuditRecord:
        command = ModerationDecisionRequested(
            request_id=key, operator=operator, item_id=item_id, verdict=verdict, reason=reason
        )
        action = APPROVE if verdict == "approve" else REJECT
        return await self._commands.submit(
            key, operator, action, f"held:{item_id}", {"item_id": item_id}, reason, command
        )

    async def restrict(
        self, key: uuid.UUID, operator: str, telegram_id: int, ban: bool, reason: str
    ) -> AuditRecord:
        command = UserRestrictionRequested(
            request_id=key,
            operator=operator,
            telegram_id=telegram_id,
            action="ban" if ban else "unban",
            reason=reason,
        )
        action = BAN if ban else UNBAN
        payload = {"telegram_id": telegram_id}
        return await self._commands.submit(
            key, operator, action, str(telegram_id), payload, reason, command
        )

    async def entry(self, key: uuid.UUID) -> AuditRecord | None:
        return await self._commands.entry(key)


def count(outcome: str, subject: str, category: str) -> None:
    OUTCOMES.labels(outcome=outcome, subject=subject, category=category).inc()


def register_answers(runtime: ServiceRuntime) -> None:
    """The gateway's answers settle the audit entries of the commands sent from here (the
    CLI's and the moderation's own decisions carry no request id: nothing to settle); every
    moderation outcome is counted, once (after the inbox's commit)."""

    @runtime.consumer.on(ModerationRefused)
    async def refused(event: ModerationRefused, uow: UnitOfWork) -> None:
        uow.after_commit(lambda: count("refused", event.subject, event.category))

    @runtime.consumer.on(ModerationHeld)
    async def held(event: ModerationHeld, uow: UnitOfWork) -> None:
        uow.after_commit(lambda: count("held", event.subject, event.category))

    @runtime.consumer.on(ModerationDecided)
    async def decided(event: ModerationDecided, uow: UnitOfWork) -> None:
        uow.after_commit(lambda: count(event.verdict, event.subject, event.category))
        if event.request_id is not None:
            outcome = {
                "verdict": event.verdict,
                "telegram_id": event.telegram_id,
                "job_request_id": str(event.job_request_id),
            }
            await settle(uow, event.request_id, "applied", outcome)

    @runtime.consumer.on(ModerationDecisionRefused)
    async def decision_refused(event: ModerationDecisionRefused, uow: UnitOfWork) -> None:
        outcome = {"reason": event.reason.value, "state": event.state}
        await settle(uow, event.request_id, "refused", outcome)

    @runtime.consumer.on(UserRestricted)
    async def restricted(event: UserRestricted, uow: UnitOfWork) -> None:
        uow.after_commit(lambda: count(event.restriction, "account", ""))
        if event.request_id is not None:
            await settle(uow, event.request_id, "applied", {"restriction": event.restriction})

    @runtime.consumer.on(UserRestrictionRefused)
    async def restriction_refused(event: UserRestrictionRefused, uow: UnitOfWork) -> None:
        await settle(uow, event.request_id, "refused", {"reason": event.reason})


def api_router(
    reads: ModerationReads, moderation: ModerationCommands, operators: Operators
) -> APIRouter:
    guard = guards(operators)
    Operator = Annotated[str, guard.viewer]
    Support = Annotated[str, guard.support]
    router = APIRouter(prefix="/api/v1/moderation", tags=["moderation"], responses=ERRORS)

    @router.get("/queue")
    async def queue(
        _: Operator,
        state: Literal["held", "approved", "rejected", "all"] = "held",
        telegram_id: Annotated[int | None, Query(gt=0, le=JSON_SAFE_MAX)] = None,
        offset: OffsetQuery = 0,
        limit: LimitQuery = 50,
    ) -> Page[HeldRecord]:
        """Requests held for a decision (a photo between the hold and the refuse thresholds),
        the waiting ones oldest first, decided ones newest first; by state and user."""
        page = await reads.held(
            ListHeld(
                state=None if state == "all" else state,
                telegram_id=telegram_id,
                offset=offset,
                limit=limit,
            )
        )
        return Page(items=page.items, total=page.total, offset=offset, limit=limit)

    @router.get("/queue/{item_id}/photos/{index}", responses=PHOTO, response_class=Response)
    async def photo(_: Operator, item_id: ItemId, index: PhotoIndex) -> Response:
        """One of a held request's photos (0, or an album's 1 and 2), downscaled."""
        return Response(await reads.preview(item_id, index), media_type="image/jpeg")

    @router.post("/queue/{item_id}/decision", responses=COMMAND_RESPONSES)
    async def decide(
        who: Support,
        item_id: ItemId,
        body: Decision,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Approve or reject a held request, once per idempotency key; the gateway applies it
        (refused when there is no such request or it was decided already). Support or admin."""
        submitted = moderation.decide(
            idempotency_key, who, item_id, body.verdict, body.reason.strip()
        )
        return await command_answer(submitted, response)

    @router.get("/users/{telegram_id}")
    async def user(_: Operator, telegram_id: TelegramIdPath) -> UserModerationView:
        """A user's standing (banned, suspended, slowed down), their recent moderation
        decisions and held requests, and their farming signals (the gateway's shared uploads,
        billing's payment, welcome and bonus)."""
        return await reads.user(telegram_id)

    @router.post("/users/{telegram_id}/ban", responses=COMMAND_RESPONSES)
    async def ban(
        who: Support,
        telegram_id: TelegramIdPath,
        body: Restriction,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Ban a user: the bot refuses them politely, with the reason (their data and money
        commands stay open). Once per idempotency key. Support or admin."""
        submitted = moderation.restrict(
            idempotency_key, who, telegram_id, True, body.reason.strip()
        )
        return await command_answer(submitted, response)

    @router.post("/users/{telegram_id}/unban", responses=COMMAND_RESPONSES)
    async def unban(
        who: Support,
        telegram_id: TelegramIdPath,
        body: Restriction,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Lift a user's ban or suspension (refused when there is none). Once per idempotency
        key. Support or admin."""
        submitted = moderation.restrict(
            idempotency_key, who, telegram_id, False, body.reason.strip()
        )
        return await command_answer(submitted, response)

    return router


class ModerationPages:
    """The panel's moderation queue and each user's moderation page."""

    def __init__(
        self, panel: Panel, reads: ModerationReads, moderation: ModerationCommands
    ) -> None:
        self._panel = panel
        self._reads = reads
        self._moderation = moderation

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/panel/moderation", include_in_schema=False)
        router.add_api_route("", self.queue, methods=["GET"])
        router.add_api_route("/{item_id}/photos/{index}", self.photo, methods=["GET"])
        router.add_api_route("/{item_id}", self.decide, methods=["POST"])
        router.add_api_route("/users/{telegram_id}", self.user, methods=["GET"])
        router.add_api_route("/users/{telegram_id}", self.restrict, methods=["POST"])
        return router

    async def queue(
        self, request: Request, state: str = "held", offset: int = 0, done: str | None = None
    ) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        return await self._queue(request, state, offset, done=done)

    async def _queue(
        self,
        request: Request,
        state: str,
        offset: int,
        *,
        done: str | None = None,
        errors: dict[int, str] | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        state = state if state in STATES else "held"
        offset = max(offset, 0)
        page = await self._reads.held(
            ListHeld(
                state=None if state == "all" else state,
                offset=min(offset, 10_000_000),
                limit=PAGE,
            )
        )
        role = self._panel.role(request)
        context = {
            "rows": page.items,
            "state": state,
            "states": STATES,
            "result": await self._result(done),
            "errors": errors or {},
            "form": form or {},
            "keys": {item.item_id: uuid.uuid4() for item in page.items},
            "can_decide": role is not None and role >= Role.support,
            **pager(request, offset, page.total),
        }
        status_code = 422 if errors else 200
        return self._panel.render(request, "moderation.html", context, status_code=status_code)

    async def photo(self, request: Request, item_id: int, index: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        if not (0 < item_id <= JSON_SAFE_MAX and 0 <= index <= 2):
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        return Response(await self._reads.preview(item_id, index), media_type="image/jpeg")

    async def decide(self, request: Request, item_id: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.support)
        if not 0 < item_id <= JSON_SAFE_MAX:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        verdict = form_text(form.get("verdict"))
        if verdict not in ("approve", "reject"):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="approve or reject")
        reason, error = form_reason(form)
        state = form_text(form.get("state")) or "held"
        if error is not None:
            return await self._queue(
                request, state, 0, errors={item_id: error}, form={"reason": reason}
            )
        record = await self._moderation.decide(
            form_key(form),
            self._panel.operator(request),
            item_id,
            verdict,  # type: ignore[arg-type]
            reason,
        )
        query = urlencode({"state": state, "done": str(record.request_id)})
        return RedirectResponse(f"/panel/moderation?{query}", status.HTTP_303_SEE_OTHER)

    async def user(self, request: Request, telegram_id: int, done: str | None = None) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        return await self._user(request, telegram_id, done=done)

    async def _user(
        self,
        request: Request,
        telegram_id: int,
        *,
        done: str | None = None,
        errors: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        if not 0 < telegram_id <= JSON_SAFE_MAX:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        view = await self._reads.user(telegram_id)
        held = await self._reads.held(ListHeld(state=None, telegram_id=telegram_id, limit=20))
        role = self._panel.role(request)
        context = {
            "telegram_id": telegram_id,
            "moderation": view.moderation,
            "farming": view.farming,
            "held": held.items,
            "result": await self._result(done),
            "errors": errors or {},
            "form": form or {},
            "key": uuid.uuid4(),
            "can_restrict": role is not None and role >= Role.support,
        }
        status_code = 422 if errors else 200
        return self._panel.render(request, "moderation_user.html", context, status_code=status_code)

    async def restrict(self, request: Request, telegram_id: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.support)
        if not 0 < telegram_id <= JSON_SAFE_MAX:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        action = form_text(form.get("action"))
        if action not in ("ban", "unban"):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="ban or unban")
        reason, error = form_reason(form)
        if error is not None:
            return await self._user(
                request, telegram_id, errors={"reason": error}, form={"reason": reason}
            )
        record = await self._moderation.restrict(
            form_key(form),
            self._panel.operator(request),
            telegram_id,
            action == "ban",
            reason,
        )
        query = urlencode({"done": str(record.request_id)})
        return RedirectResponse(
            f"/panel/moderation/users/{telegram_id}?{query}", status.HTTP_303_SEE_OTHER
        )

    async def _result(self, done: str | None) -> AuditRecord | None:
        if done is None:
            return None
        try:
            return await self._moderation.entry(uuid.UUID(done))
        except ValueError:
            return None


def register(
    runtime: ServiceRuntime,
    web: FastAPI,
    panel: Panel,
    rpc: RpcClient,
    commands: Commands,
    operators: Operators,
) -> None:
    """The moderation area: the gateway's answers, the API routes and the panel pages."""
    register_answers(runtime)
    reads = ModerationReads(rpc)
    moderation = ModerationCommands(commands)
    web.include_router(api_router(reads, moderation, operators))
    web.include_router(ModerationPages(panel, reads, moderation).router())
