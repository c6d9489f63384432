"""The HTTP API, `/api/v1/...`: every list paged and filtered, every write a command.

Authentication on every endpoint but the sign-in: a session, named by a bearer token from
`POST /api/v1/sessions` (scripts) or the panel's cookie.
"""

import math
import re
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from backend_api.auth import (
    Operators,
    Principal,
    SessionRecord,
    SignInRefusedError,
    TooManyAttemptsError,
    bearer,
    client_address,
    principal_of,
)
from backend_api.commands import (
    AWAITING,
    AlreadyDecidedError,
    AuditRecord,
    Commands,
    IdempotencyConflictError,
    SelfApprovalError,
)
from backend_api.reads import Owners
from backend_api.settings import Role
from contracts.events import OperatorNote, SignedCredits
from contracts.rpc import (
    AccountView,
    CurrencyTotal,
    GatewayProfile,
    JobRecord,
    JobStage,
    LedgerEntryView,
    LedgerKindName,
    ListLedger,
    ListPayments,
    PaymentRecord,
    PaymentStatusName,
    PaymentTypeName,
    SearchAccounts,
    SearchJobs,
)

OffsetQuery = Annotated[int, Query(ge=0, le=10_000_000)]
LimitQuery = Annotated[int, Query(ge=1, le=200)]
PROFILE_ROWS = 20
T = TypeVar("T")


def _iso_8601(value: object) -> object:
    """A date-time as the document says (RFC 3339), not pydantic's lax numbers (Unix time)."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", value):
        raise ValueError("an RFC 3339 date-time with its offset, e.g. 2026-12-05T10:00:00Z")
    return value


JSON_SAFE_MAX = 2**53 - 1
"""Telegram's ids have at most 52 significant bits; JSON numbers past 2**53 lose precision in
many clients, so the API stops there."""
JsonTelegramId = Annotated[int, Field(gt=0, le=JSON_SAFE_MAX)]
WRITTEN = r"^[^\x00]*[^\s\x00][^\x00]*$"
"""Text an operator writes: something besides spaces, and no NUL (PostgreSQL refuses it)."""
Reason = Annotated[OperatorNote, Field(pattern=WRITTEN)]


def _json_integer(value: object) -> object:
    """A JSON integer (2 or 2.0), as the document says: not `true`, not "2" (pydantic's lax
    mode would take both)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("an integer")
    return int(value)


def _in_utc(value: datetime) -> datetime:
    """The moment in UTC, as the owners compare it; refused when that falls outside years
    1-9999 (0001-01-01T00:00+05:00), which neither Python nor PostgreSQL's driver holds."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("a moment within years 1-9999 in UTC") from None


Moment = Annotated[AwareDatetime, BeforeValidator(_iso_8601), AfterValidator(_in_utc)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int
    total_exact: bool = True
    """False: at least `total` match (the owner stops counting there, so that a list stays fast
    on a big shop; narrow the filters for an exact count)."""


class PaymentsPage(Page[PaymentRecord]):
    totals: list[CurrencyTotal]
    """Every payment matching the filters, per currency: how many, how much."""


class Profile(BaseModel):
    account: AccountView
    ledger: Page[LedgerEntryView]
    payments: Page[PaymentRecord]
    jobs: Page[JobRecord]
    gateway: GatewayProfile | None = None
    """The bot's side: language, `/start` source, first seen, blocked (None: no Telegram id,
    or the gateway did not answer)."""


class CreditAdjustment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    telegram_id: Annotated[JsonTelegramId, BeforeValidator(_json_integer)]
    credits: Annotated[
        SignedCredits,
        BeforeValidator(_json_integer),
        Field(
            description="non-zero; negative takes credits away",
            json_schema_extra={"not": {"const": 0}},
        ),
    ]
    reason: Reason

    @field_validator("credits")
    @classmethod
    def _not_zero(cls, credits: int) -> int:
        if credits == 0:
            raise ValueError("an adjustment moves at least one credit")
        return credits


class CommandStatus(BaseModel):
    request_id: uuid.UUID
    action: str
    operator: str
    target: str
    payload: dict[str, Any]
    reason: str
    status: Literal["awaiting_approval", "rejected", "pending", "applied", "refused"]
    """awaiting_approval: held for a second operator (not sent); rejected: dropped unsent;
    pending: sent, its owner has not answered; applied / refused: the owner's answer."""
    outcome: dict[str, Any] | None
    created_at: datetime
    decided_at: datetime | None
    approver: str | None = None
    """Who approved or rejected a held write."""

    @classmethod
    def of(cls, record: AuditRecord) -> "CommandStatus":
        return cls.model_validate(record, from_attributes=True)


class Me(BaseModel):
    operator: str
    role: Literal["viewer", "support", "admin"]


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    login: Annotated[str, Field(min_length=1, max_length=100)]
    password: Annotated[str, Field(min_length=1, max_length=1000)]
    code: Annotated[str | None, Field(max_length=10, description="An admin's one-time code")] = None


class SessionToken(BaseModel):
    token: str
    """Send it as `Authorization: Bearer <token>`; it ends at `expires_at` or when revoked."""
    session_id: uuid.UUID
    operator: str
    role: Literal["viewer", "support", "admin"]
    expires_at: datetime


class SessionView(BaseModel):
    id: uuid.UUID
    operator: str
    kind: Literal["panel", "api"]
    address: str
    user_agent: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    current: bool
    """The session this request came in."""

    @classmethod
    def of(cls, record: SessionRecord, current: Principal) -> "SessionView":
        return cls.model_validate({**record.__dict__, "current": record.id == current.session_id})


@dataclass(frozen=True)
class Guards:
    """The role each endpoint needs, as a dependency: `who: Annotated[str, guards.support]` is
    the signed-in operator's login, checked at every request against their session and account
    (401 signed out, 403 too low)."""

    viewer: Any
    support: Any
    admin: Any


def signed_in(request: Request, needs: Role = Role.viewer) -> Principal:
    """The request's operator if their role is at least `needs`: else 401 (nobody signed in,
    or a session that ended) or 403."""
    principal = principal_of(request)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="not signed in",
            headers={"WWW-Authenticate": 'Bearer realm="imagebot"'},
        )
    if principal.role < needs:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"needs the {needs.name} role")
    return principal


def guards(operators: Operators | None = None) -> Guards:
    """`operators` is no longer needed (the session middleware finds the operator); kept so
    every area's `guards(operators)` reads the same."""

    def needs(role: Role) -> Any:
        async def operator(
            request: Request,
            _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> str:
            return signed_in(request, role).login

        return Depends(operator)

    return Guards(viewer=needs(Role.viewer), support=needs(Role.support), admin=needs(Role.admin))


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A body that cannot be read"},
    401: {"description": "Not signed in"},
    502: {"description": "An owning service refused the request"},
    403: {"description": "The operator's role may not do this"},
    503: {"description": "An owning service did not answer"},
}
COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "model": CommandStatus,
        "description": "Sent, its owner has not answered yet; or held for a second operator's "
        "approval (`awaiting_approval`)",
    },
    409: {"description": "The idempotency key was used for another command"},
}
IdempotencyKey = Annotated[uuid.UUID, Header(description="A new UUID per write")]


async def command_answer(submitted: Awaitable[AuditRecord], response: Response) -> CommandStatus:
    """A write's answer: 200 with the owner's outcome, 202 while it has not answered, 409 for a
    reused idempotency key."""
    try:
        record = await submitted
    except IdempotencyConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="idempotency key reused") from exc
    if record.status in ("pending", AWAITING):
        response.status_code = status.HTTP_202_ACCEPTED
    return CommandStatus.of(record)


def api_router(owners: Owners, commands: Commands, operators: Operators) -> APIRouter:
    guard = guards(operators)
    Operator = Annotated[str, guard.viewer]
    Support = Annotated[str, guard.support]
    Admin = Annotated[str, guard.admin]
    router = APIRouter(prefix="/api/v1", responses=ERRORS)

    @router.get("/me", tags=["operators"])
    async def me(request: Request, _: Operator) -> Me:
        principal = signed_in(request)
        return Me(operator=principal.login, role=principal.role.name)

    @router.get("/users", tags=["users"])
    async def users(
        _: Operator,
        telegram_id: Annotated[int | None, Query(gt=0, le=JSON_SAFE_MAX)] = None,
        username: Annotated[
            str | None, Query(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")
        ] = None,
        offset: OffsetQuery = 0,
        limit: LimitQuery = 50,
    ) -> Page[AccountView]:
        """Users by Telegram id (exact, newest first) or username (prefix, any case, in
        the username's order)."""
        page = await owners.accounts(
            SearchAccounts(
                telegram_id=telegram_id, username_prefix=username, offset=offset, limit=limit
            )
        )
        return Page(
            items=page.accounts,
            total=page.total,
            offset=offset,
            limit=limit,
            total_exact=page.total_exact,
        )

    @router.get("/users/{user_id}", tags=["users"], responses={404: {"description": "No user"}})
    async def profile(_: Operator, user_id: Annotated[int, Path(gt=0, le=2**31 - 1)]) -> Profile:
        """A user's account, with the first page of their ledger, payments and jobs."""
        found = await owners.accounts(SearchAccounts(user_id=user_id, limit=1))
        if not found.accounts:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such user")
        ledger = await owners.ledger(ListLedger(user_id=user_id, limit=PROFILE_ROWS))
        payments = await owners.payments(ListPayments(user_id=user_id, limit=PROFILE_ROWS))
        jobs = await owners.jobs(SearchJobs(user_id=user_id, limit=PROFILE_ROWS))
        gateway = await owners.gateway_profile(found.accounts[0].telegram_id)
        return Profile(
            account=found.accounts[0],
            gateway=gateway,
            ledger=Page(items=ledger.entries, total=ledger.total, offset=0, limit=PROFILE_ROWS),
            payments=Page(
                items=payments.payments, total=payments.total, offset=0, limit=PROFILE_ROWS
            ),
            jobs=Page(items=jobs.jobs, total=jobs.total, offset=0, limit=PROFILE_ROWS),
        )

    @router.get("/ledger", tags=["money"])
    async def ledger(
        _: Operator,
        user_id: Annotated[int | None, Query(gt=0, le=2**31 - 1)] = None,
        kind: LedgerKindName | None = None,
        offset: OffsetQuery = 0,
        limit: LimitQuery = 50,
    ) -> Page[LedgerEntryView]:
        page = await owners.ledger(
            ListLedger(user_id=user_id, kind=kind, offset=offset, limit=limit)
        )
        return Page(
            items=page.entries,
            total=page.total,
            offset=offset,
            limit=limit,
            total_exact=page.total_exact,
        )

    @router.get("/payments", tags=["money"])
    async def payments(
        _: Operator,
        user_id: Annotated[int | None, Query(gt=0, le=2**31 - 1)] = None,
        status_: Annotated[PaymentStatusName | None, Query(alias="status")] = None,
        payment_type: PaymentTypeName | None = None,
        currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
        method: Annotated[str | None, Query(max_length=50, pattern=r"^[a-z0-9_]+$")] = None,
        refund_of: Annotated[int | None, Query(gt=0, le=2**31 - 1)] = None,
        created_from: Moment | None = None,
        created_until: Moment | None = None,
        offset: OffsetQuery = 0,
        limit: LimitQuery = 50,
    ) -> PaymentsPage:
        """Payments, newest first: by user, status, type, currency (RUB, XTR), method and
        creation time (from inclusive, until exclusive), with their totals per currency (all
        matching, not one page)."""
        page = await owners.payments(
            ListPayments(
                user_id=user_id,
                status=status_,
                payment_type=payment_type,
                currency=currency,
                payment_method=method,
                refund_of=refund_of,
                created_from=created_from,
                created_until=created_until,
                offset=offset,
                limit=limit,
            )
        )
        return PaymentsPage(
            items=page.payments, total=page.total, offset=offset, limit=limit, totals=page.totals
        )

    @router.get("/jobs", tags=["jobs"])
    async def jobs(
        _: Operator,
        user_id: Annotated[int | None, Query(gt=0, le=2**31 - 1)] = None,
        status_: Annotated[JobStage | None, Query(alias="status")] = None,
        preset_id: Annotated[int | None, Query(gt=0, le=2**31 - 1)] = None,
        created_from: Moment | None = None,
        created_until: Moment | None = None,
        offset: OffsetQuery = 0,
        limit: LimitQuery = 50,
    ) -> Page[JobRecord]:
        """Jobs, newest first: by user, status (stage), preset and creation time."""
        page = await owners.jobs(
            SearchJobs(
                user_id=user_id,
                status=status_,
                preset_id=preset_id,
                created_from=created_from,
                created_until=created_until,
                offset=offset,
                limit=limit,
            )
        )
        return Page(
            items=page.jobs,
            total=page.total,
            offset=offset,
            limit=limit,
            total_exact=page.total_exact,
        )

    @router.post("/credit-adjustments", tags=["money"], responses=COMMAND_RESPONSES)
    async def adjust(
        who: Support, body: CreditAdjustment, response: Response, idempotency_key: IdempotencyKey
    ) -> CommandStatus:
        """Add credits to a user's balance or take some away (never below zero), once per
        idempotency key, with a reason; billing applies it through its ledger. Support or
        admin."""
        submitted = commands.adjust_credits(
            key=idempotency_key,
            operator=who,
            telegram_id=body.telegram_id,
            credits=body.credits,
            reason=body.reason.strip(),
        )
        return await command_answer(submitted, response)

    @router.get(
        "/commands/{request_id}", tags=["audit"], responses={404: {"description": "Unknown"}}
    )
    async def command(_: Support, request_id: uuid.UUID) -> CommandStatus:
        """Where a write stands (its idempotency key)."""
        record = await commands.entry(request_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such command")
        return CommandStatus.of(record)

    @router.get("/audit", tags=["audit"])
    async def audit(
        _: Admin,
        operator_: Annotated[
            str | None, Query(alias="operator", max_length=100, pattern=r"^[^\x00-\x1f]*$")
        ] = None,
        action: Annotated[str | None, Query(max_length=50, pattern=r"^[^\x00-\x1f]*$")] = None,
        target: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00-\x1f]*$")] = None,
        offset: OffsetQuery = 0,
        limit: LimitQuery = 50,
    ) -> Page[CommandStatus]:
        """Every operator action, newest first. Admins only."""
        records, total = await commands.audit(
            operator=operator_, action=action, target=target, offset=offset, limit=limit
        )
        return Page(
            items=[CommandStatus.of(record) for record in records],
            total=total,
            offset=offset,
            limit=limit,
        )

    router.include_router(_sessions_router(operators))
    router.include_router(_approvals_router(commands, guard))
    return router


SIGN_IN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Wrong login, password or one-time code (or a code used before)"},
    429: {"description": "Too many failed sign-ins from here or for this login"},
}


def _sessions_router(operators: Operators) -> APIRouter:
    router = APIRouter(prefix="/sessions", tags=["sessions"])
    Operator = Annotated[str, guards().viewer]

    @router.post("", status_code=status.HTTP_201_CREATED, responses=SIGN_IN_ERRORS)
    async def sign_in(body: SignIn, request: Request) -> SessionToken:
        """Sign in: a session token for the other endpoints. Admins give their authenticator's
        current one-time code too (each code once). Failed sign-ins are throttled per login and
        per address."""
        try:
            session = await operators.sign_in(
                body.login,
                body.password,
                body.code,
                address=client_address(request),
                user_agent=request.headers.get("user-agent", ""),
                kind="api",
            )
        except TooManyAttemptsError as exc:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail="too many failed sign-ins",
                headers={"Retry-After": str(math.ceil(exc.retry_after_s))},
            ) from exc
        except SignInRefusedError as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, detail="wrong login, password or code"
            ) from exc
        return SessionToken(
            token=session.token,
            session_id=session.session_id,
            operator=session.login,
            role=session.role.name,
            expires_at=session.expires_at,
        )

    @router.get("")
    async def sessions(
        request: Request,
        _: Operator,
        operator_: Annotated[
            str | None, Query(alias="operator", max_length=100, pattern=r"^[^\x00-\x1f]*$")
        ] = None,
        offset: OffsetQuery = 0,
        limit: LimitQuery = 50,
    ) -> Page[SessionView]:
        """Live sessions, newest first: one's own; an admin's, everyone's (or `operator`'s)."""
        principal = signed_in(request)
        of = operator_ if principal.role >= Role.admin else principal.login
        records, total = await operators.sessions(operator=of, offset=offset, limit=limit)
        return Page(
            items=[SessionView.of(record, principal) for record in records],
            total=total,
            offset=offset,
            limit=limit,
        )

    @router.delete(
        "/{session_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses={404: {"description": "No such live session of yours"}},
    )
    async def revoke(request: Request, _: Operator, session_id: uuid.UUID) -> None:
        """End a session at once (one's own; an admin, anyone's): its next request is
        signed out. Ending the current one signs out."""
        if not await operators.revoke(session_id, signed_in(request)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such session")

    return router


def _approvals_router(commands: Commands, guard: Guards) -> APIRouter:
    router = APIRouter(prefix="/approvals", tags=["approvals"])
    Support = Annotated[str, guard.support]
    decided: dict[int | str, dict[str, Any]] = {
        404: {"description": "No such write"},
        409: {"description": "Not awaiting approval (any more)"},
    }

    @router.get("")
    async def awaiting(
        _: Support, offset: OffsetQuery = 0, limit: LimitQuery = 50
    ) -> Page[CommandStatus]:
        """Writes held for a second operator's approval, newest first. Support or admin."""
        records, total = await commands.audit(
            operator=None, action=None, target=None, offset=offset, limit=limit, status=AWAITING
        )
        return Page(
            items=[CommandStatus.of(record) for record in records],
            total=total,
            offset=offset,
            limit=limit,
        )

    @router.post(
        "/{request_id}/approve",
        responses={
            **COMMAND_RESPONSES,
            **decided,
            403: {"description": "The operator's role may not, or they asked for it themselves"},
        },
    )
    async def approve(who: Support, request_id: uuid.UUID, response: Response) -> CommandStatus:
        """Approve a held write: it is sent to its owner (once, however often approved). Not
        by the operator who asked for it. Support or admin."""
        try:
            record = await commands.approve(request_id, who)
        except KeyError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such write") from exc
        except SelfApprovalError as exc:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail="a second operator must approve it"
            ) from exc
        except AlreadyDecidedError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="not awaiting approval") from exc
        if record.status == "pending":
            response.status_code = status.HTTP_202_ACCEPTED
        return CommandStatus.of(record)

    @router.post("/{request_id}/reject", responses=decided)
    async def reject(who: Support, request_id: uuid.UUID) -> CommandStatus:
        """Drop a held write unsent (its requester withdrawing it, or another operator).
        Support or admin."""
        try:
            record = await commands.reject(request_id, who)
        except KeyError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such write") from exc
        except AlreadyDecidedError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="not awaiting approval") from exc
        return CommandStatus.of(record)

    return router
