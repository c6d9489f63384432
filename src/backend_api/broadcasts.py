"""Broadcasts: a message to an audience of the bot's users (by language, activity, whether they
ever paid), counted before it goes, followed while it goes out, canceled while some is left; in
the API (`/api/v1/broadcasts...`) and the panel (`/panel/broadcasts...`).

The gateway owns the users and the sending: a broadcast is a command to it
(`BroadcastRequested`, whose request id, the idempotency key, is also the broadcast's id) that
it applies once, queuing one message per chat in its sender's lowest lane (after replies and
job messages); a cancel is `BroadcastCancelRequested`. The count and the progress are reads it
answers (`gateway.count_audience`, `gateway.list_broadcasts`). Sending and canceling are for
admins; every operator may look.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from backend_api.api import (
    COMMAND_RESPONSES,
    ERRORS,
    WRITTEN,
    CommandStatus,
    IdempotencyKey,
    Moment,
    Page,
    Reason,
    command_answer,
    guards,
)
from backend_api.auth import Operators
from backend_api.commands import AuditRecord, Commands, settle
from backend_api.panel import PAGE, Panel, form_text, page_offset, pager
from backend_api.reads import Owners
from backend_api.settings import Role
from contracts.events import (
    BroadcastAudience,
    BroadcastCanceled,
    BroadcastCancelRefused,
    BroadcastCancelRequested,
    BroadcastQueued,
    BroadcastRequested,
)
from contracts.rpc import AudienceSize, BroadcastView, CountAudience, ListBroadcasts
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

SEND = "broadcast.send"
CANCEL = "broadcast.cancel"
Language = Literal["ru", "en"]
"""The bot's languages: a user's is the one they chose, else Telegram's, else the default."""
LANGUAGES: tuple[str, ...] = get_args(Language)
TEXT_MAX = 4096
Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX, pattern=WRITTEN)]


class Audience(BaseModel):
    """Who gets it, among the users who have not blocked the bot: every filter given holds."""

    model_config = ConfigDict(extra="forbid")

    languages: Annotated[list[Language], Field(max_length=2)] = []
    """Empty: every language."""
    active_since: Moment | None = None
    """Only users who joined or asked for an image at or after this moment."""
    paid_ever: bool | None = None
    """True: only users who ever topped up; false: only those who never did."""

    def contract(self) -> BroadcastAudience:
        return BroadcastAudience(
            languages=sorted(set(self.languages)),
            active_since=self.active_since,
            paid_ever=self.paid_ever,
        )


class NewBroadcast(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text
    audience: Audience = Audience()
    reason: Reason


class Cancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


@dataclass(frozen=True)
class BroadcastCommands:
    """The broadcast commands, as the API and the panel send them."""

    commands: Commands

    async def send(
        self,
        *,
        key: uuid.UUID,
        operator: str,
        text: str,
        audience: BroadcastAudience,
        reason: str,
    ) -> AuditRecord:
        command = BroadcastRequested(
            request_id=key, operator=operator, text=text, audience=audience, reason=reason
        )
        payload = {"text": text, "audience": audience.model_dump(mode="json")}
        return await self.commands.submit(key, operator, SEND, str(key), payload, reason, command)

    async def cancel(
        self, *, key: uuid.UUID, operator: str, broadcast_id: uuid.UUID, reason: str
    ) -> AuditRecord:
        command = BroadcastCancelRequested(
            request_id=key, operator=operator, broadcast_id=broadcast_id, reason=reason
        )
        payload = {"broadcast_id": str(broadcast_id)}
        return await self.commands.submit(
            key, operator, CANCEL, str(broadcast_id), payload, reason, command
        )


def register(runtime: ServiceRuntime) -> None:
    """The gateway's answers settle the broadcast commands' audit entries."""

    @runtime.consumer.on(BroadcastQueued)
    async def queued(event: BroadcastQueued, uow: UnitOfWork) -> None:
        await settle(uow, event.request_id, "applied", {"recipients": event.recipients})

    @runtime.consumer.on(BroadcastCanceled)
    async def canceled(event: BroadcastCanceled, uow: UnitOfWork) -> None:
        await settle(uow, event.request_id, "applied", {"dropped": event.dropped})

    @runtime.consumer.on(BroadcastCancelRefused)
    async def refused(event: BroadcastCancelRefused, uow: UnitOfWork) -> None:
        await settle(uow, event.request_id, "refused", {"reason": event.reason})


async def find(owners: Owners, broadcast_id: uuid.UUID) -> BroadcastView:
    found = await owners.broadcasts(ListBroadcasts(broadcast_id=broadcast_id, limit=1))
    if not found.broadcasts:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such broadcast")
    return found.broadcasts[0]


def api_router(owners: Owners, commands: Commands, operators: Operators) -> APIRouter:
    guard = guards(operators)
    Viewer = Annotated[str, guard.viewer]
    Admin = Annotated[str, guard.admin]
    sending = BroadcastCommands(commands)
    router = APIRouter(prefix="/api/v1", responses=ERRORS, tags=["broadcasts"])
    unknown: dict[int | str, dict[str, Any]] = {404: {"description": "No such broadcast"}}

    @router.get("/broadcasts/audience")
    async def audience(
        _: Viewer,
        languages: Annotated[list[Language], Query(max_length=2)] = [],  # noqa: B006 (FastAPI's)
        active_since: Moment | None = None,
        paid_ever: bool | None = None,
    ) -> AudienceSize:
        """How many chats a broadcast to this audience would reach now (users who have not
        blocked the bot; every filter given holds)."""
        chosen = Audience(languages=languages, active_since=active_since, paid_ever=paid_ever)
        return await owners.audience(CountAudience(audience=chosen.contract()))

    @router.get("/broadcasts")
    async def broadcasts(
        _: Viewer,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Page[BroadcastView]:
        """Broadcasts, newest first, each with its progress: sent, failed for good, left, and
        dropped by a cancel."""
        page = await owners.broadcasts(ListBroadcasts(offset=offset, limit=limit))
        return Page(items=page.broadcasts, total=page.total, offset=offset, limit=limit)

    @router.get("/broadcasts/{broadcast_id}", responses=unknown)
    async def broadcast(_: Viewer, broadcast_id: uuid.UUID) -> BroadcastView:
        """One broadcast and its progress."""
        return await find(owners, broadcast_id)

    @router.post("/broadcasts", responses=COMMAND_RESPONSES)
    async def send(
        who: Admin, body: NewBroadcast, response: Response, idempotency_key: IdempotencyKey
    ) -> CommandStatus:
        """Send `text` to the audience, once per idempotency key (which becomes the broadcast's
        id); the gateway queues one message per chat in its lowest lane, behind replies and job
        messages. The outcome says how many chats it was queued for. Admins only."""
        submitted = sending.send(
            key=idempotency_key,
            operator=who,
            text=body.text,
            audience=body.audience.contract(),
            reason=body.reason.strip(),
        )
        return await command_answer(submitted, response)

    @router.post("/broadcasts/{broadcast_id}/cancel", responses={**COMMAND_RESPONSES, **unknown})
    async def cancel(
        who: Admin,
        broadcast_id: uuid.UUID,
        body: Cancel,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Stop a broadcast: its messages not sent yet are dropped (those on their way to
        Telegram at that moment still go). The outcome says how many were dropped. Admins
        only."""
        await find(owners, broadcast_id)
        submitted = sending.cancel(
            key=idempotency_key,
            operator=who,
            broadcast_id=broadcast_id,
            reason=body.reason.strip(),
        )
        return await command_answer(submitted, response)

    return router


class BroadcastPages:
    """The panel's broadcast pages: the list with a new broadcast's form, one broadcast."""

    def __init__(self, panel: Panel, owners: Owners, commands: Commands) -> None:
        self._panel = panel
        self._owners = owners
        self._commands = commands
        self._sending = BroadcastCommands(commands)

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/panel", include_in_schema=False)
        router.add_api_route("/broadcasts", self.list, methods=["GET"])
        router.add_api_route("/broadcasts", self.send, methods=["POST"])
        router.add_api_route("/broadcasts/{broadcast_id}", self.show, methods=["GET"])
        router.add_api_route("/broadcasts/{broadcast_id}/cancel", self.cancel, methods=["POST"])
        return router

    async def list(self, request: Request, offset: int = 0) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        return await self._list(request, page_offset(offset))

    async def _list(
        self,
        request: Request,
        offset: int,
        *,
        form: Mapping[str, Any] | None = None,
        errors: Mapping[str, str] | None = None,
        recipients: int | None = None,
        key: uuid.UUID | None = None,
    ) -> Response:
        page = await self._owners.broadcasts(ListBroadcasts(offset=offset, limit=PAGE))
        context = {
            "rows": page.broadcasts,
            "form": form or {"languages": [], "since": "", "paid": "", "text": "", "reason": ""},
            "errors": errors or {},
            "recipients": recipients,
            "key": key or uuid.uuid4(),
            "languages_offered": LANGUAGES,
            "can_send": self._can_send(request),
            **pager(request, offset, page.total),
        }
        status_code = 422 if errors else 200
        return self._panel.render(request, "broadcasts.html", context, status_code=status_code)

    def _can_send(self, request: Request) -> bool:
        role = self._panel.role(request)
        return role is not None and role >= Role.admin

    async def send(self, request: Request) -> Response:
        """`action=count`: the form again, with how many it would reach; `action=send`: the
        command, then the broadcast's page."""
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.admin)
        languages = [value for value in form.getlist("languages") if value in LANGUAGES]
        since_text = _clean(form_text(form.get("since")) or "", 20)
        paid = form_text(form.get("paid")) or ""
        text = (form_text(form.get("text")) or "").replace("\x00", "").replace("\r\n", "\n")
        reason = _clean(form_text(form.get("reason")) or "", 600)
        errors: dict[str, str] = {}
        since = _date(since_text)
        if since_text and since is None:
            errors["since"] = "date"
        if not text.strip():
            errors["text"] = "required"
        elif len(text) > TEXT_MAX:
            errors["text"] = "too_long"
        if not reason:
            errors["reason"] = "required"
        elif len(reason) > 500:
            errors["reason"] = "too_long"
        try:
            key = uuid.UUID(form_text(form.get("key")) or "")
        except ValueError:
            key = uuid.uuid4()
        shown = {
            "languages": languages,
            "since": since_text,
            "paid": paid,
            "text": text,
            "reason": reason,
        }
        audience = BroadcastAudience(
            languages=sorted(set(languages)),
            active_since=since,
            paid_ever={"yes": True, "no": False}.get(paid),
        )
        if form_text(form.get("action")) == "count":
            size = await self._owners.audience(CountAudience(audience=audience))
            errors.pop("text", None)
            errors.pop("reason", None)
            return await self._list(
                request, 0, form=shown, errors=errors, recipients=size.recipients, key=key
            )
        if errors:
            return await self._list(request, 0, form=shown, errors=errors, key=key)
        record = await self._sending.send(
            key=key,
            operator=self._panel.operator(request),
            text=text,
            audience=audience,
            reason=reason,
        )
        return _done(record.target, record)

    async def show(self, request: Request, broadcast_id: str, done: str | None = None) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        return await self._show(request, _uuid(broadcast_id), done=done)

    async def _show(
        self,
        request: Request,
        broadcast_id: uuid.UUID,
        *,
        done: str | None = None,
        errors: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> Response:
        broadcast = await find(self._owners, broadcast_id)
        result = None
        if done is not None:
            try:
                result = await self._commands.entry(uuid.UUID(done))
            except ValueError:
                result = None
        context = {
            "broadcast": broadcast,
            "result": result,
            "errors": errors or {},
            "form": form or {},
            "key": uuid.uuid4(),
            "can_send": self._can_send(request),
        }
        status_code = 422 if errors else 200
        return self._panel.render(request, "broadcast.html", context, status_code=status_code)

    async def cancel(self, request: Request, broadcast_id: str) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.admin)
        target = _uuid(broadcast_id)
        await find(self._owners, target)
        reason = _clean(form_text(form.get("reason")) or "", 600)
        if not reason or len(reason) > 500:
            errors = {"reason": "too_long" if reason else "required"}
            return await self._show(request, target, errors=errors, form={"reason": reason})
        try:
            key = uuid.UUID(form_text(form.get("key")) or "")
        except ValueError:
            key = uuid.uuid4()
        record = await self._sending.cancel(
            key=key,
            operator=self._panel.operator(request),
            broadcast_id=target,
            reason=reason,
        )
        return _done(str(target), record)


def _done(broadcast_id: str, record: AuditRecord) -> Response:
    return RedirectResponse(
        f"/panel/broadcasts/{broadcast_id}?{urlencode({'done': str(record.request_id)})}",
        status.HTTP_303_SEE_OTHER,
    )


def _clean(text: str, limit: int) -> str:
    """One line of text without control characters, trimmed (`limit` keeps a page small)."""
    return "".join(char for char in text[:limit] if char >= " ").strip()


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise HTTPException(status.HTTP_404_NOT_FOUND) from None


def _date(value: str) -> datetime | None:
    """A form's date (YYYY-MM-DD) as its UTC midnight; None when blank or not one."""
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC) if value else None
    except ValueError:
        return None
