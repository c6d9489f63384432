"""Money: payments with their filters and totals, refunds to the buyer, re-checks with
YooKassa and the ledger audit, in the API (`/api/v1/payments...`, `/api/v1/ledger/audit`) and
the panel (`/panel/payments...`, `/panel/ledger-audit`).

A refund and a re-check are commands to billing (`TopUpRefundRequested`,
`PaymentRecheckRequested`) through `Commands.submit`: once per idempotency key, with the
operator and a reason; billing's answer settles the audit entry. A refund runs billing's own
refund use case (the one `imagebot billing refund` runs), so a refund from here and one from
the command line are the same thing.
"""

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from backend_api.api import (
    COMMAND_RESPONSES,
    ERRORS,
    CommandStatus,
    IdempotencyKey,
    Reason,
    _json_integer,
    command_answer,
    guards,
)
from backend_api.auth import Operators
from backend_api.commands import Amount, AuditRecord, Commands, settle
from backend_api.panel import (
    PAGE,
    Panel,
    form_key,
    form_reason,
    form_text,
    page_offset,
    pager,
    positive,
    printable,
)
from backend_api.reads import Owners
from backend_api.settings import Role
from contracts.events import (
    Kopecks,
    PaymentRechecked,
    PaymentRecheckRequested,
    TopUpRefundDecided,
    TopUpRefundRequested,
)
from contracts.rpc import (
    LedgerAudit,
    LedgerAuditResult,
    ListPayments,
    PaymentPage,
    PaymentRecord,
    PaymentStatusName,
    PaymentTypeName,
)
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

REFUND = "payment.refund"
RECHECK = "payment.recheck"
REFUND_TAKEN = ("refunded", "pending")
"""Refund outcomes that mean billing refunded (or YooKassa took the refund)."""
RECHECK_DONE = ("credit", "cancel", "wait", "done", "conflict", "mismatch")
"""Re-check outcomes that mean YooKassa was asked and its answer applied (or found to need a
human: `conflict`, `mismatch`)."""
PAYMENT_STATUSES: tuple[str, ...] = get_args(PaymentStatusName)
PAYMENT_TYPES: tuple[str, ...] = get_args(PaymentTypeName)
PaymentPath = Annotated[int, Path(gt=0, le=2**31 - 1)]


class Refund(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: (
        Annotated[
            Kopecks,
            BeforeValidator(_json_integer),
            Field(
                description="In the payment's minor unit (kopecks; Stars for XTR); omitted: all "
                "that is left of the top-up"
            ),
        ]
        | None
    ) = None
    reason: Reason


class Recheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


@dataclass(frozen=True)
class Money:
    """The money commands, as the API and the panel send them."""

    commands: Commands

    async def refund(
        self,
        *,
        key: uuid.UUID,
        operator: str,
        payment_id: int,
        amount: int | None,
        reason: str,
        paid: PaymentRecord | None = None,
    ) -> AuditRecord:
        """`paid`: the top-up as its owner shows it, so a refund above the approval limit in its
        currency (`amount`, or the whole top-up) waits for a second operator."""
        command = TopUpRefundRequested(
            request_id=key, operator=operator, payment_id=payment_id, amount=amount, reason=reason
        )
        payload = {"payment_id": payment_id, "amount": amount}
        refunded = amount if amount is not None else paid.amount_kopecks if paid else None
        held = (
            Amount(refunded, paid.currency)
            if paid is not None and paid.currency is not None and refunded is not None
            else None
        )
        return await self.commands.submit(
            key, operator, REFUND, str(payment_id), payload, reason, command, amount=held
        )

    async def recheck(
        self, *, key: uuid.UUID, operator: str, payment_id: int, reason: str
    ) -> AuditRecord:
        command = PaymentRecheckRequested(
            request_id=key, operator=operator, payment_id=payment_id, reason=reason
        )
        payload = {"payment_id": payment_id}
        return await self.commands.submit(
            key, operator, RECHECK, str(payment_id), payload, reason, command
        )


def register(runtime: ServiceRuntime) -> None:
    """Billing's answers settle the money commands' audit entries."""

    @runtime.consumer.on(TopUpRefundDecided)
    async def refund_decided(event: TopUpRefundDecided, uow: UnitOfWork) -> None:
        outcome = event.model_dump(
            mode="json",
            include={"outcome", "refund_payment_id", "amount", "credits", "shortfall", "detail"},
        )
        verdict = "applied" if event.outcome in REFUND_TAKEN else "refused"
        await settle(uow, event.request_id, verdict, outcome)

    @runtime.consumer.on(PaymentRechecked)
    async def rechecked(event: PaymentRechecked, uow: UnitOfWork) -> None:
        outcome = event.model_dump(
            mode="json",
            include={"outcome", "status_before", "status", "provider_status", "detail"},
        )
        verdict = "applied" if event.outcome in RECHECK_DONE else "refused"
        await settle(uow, event.request_id, verdict, outcome)


def api_router(owners: Owners, commands: Commands, operators: Operators) -> APIRouter:
    guard = guards(operators)
    Support = Annotated[str, guard.support]
    money = Money(commands)
    router = APIRouter(prefix="/api/v1", responses=ERRORS, tags=["money"])

    @router.get("/payments/{payment_id}", responses={404: {"description": "No payment"}})
    async def payment(_: Annotated[str, guard.viewer], payment_id: PaymentPath) -> PaymentRecord:
        """One payment (a top-up, a refund or a bonus)."""
        return await _payment(owners, payment_id)

    @router.post("/payments/{payment_id}/refund", responses=COMMAND_RESPONSES)
    async def refund(
        who: Support,
        payment_id: PaymentPath,
        body: Refund,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Refund a top-up to its buyer, whole or `amount` of it, once per idempotency key;
        billing refunds it (YooKassa) and takes the credits it bought back out of the balance,
        never below zero. The outcome says `refunded`, `pending` (YooKassa has not finished
        yet), or why not. Support or admin."""
        found = await owners.payments(ListPayments(payment_id=payment_id, limit=1))
        submitted = money.refund(
            key=idempotency_key,
            operator=who,
            payment_id=payment_id,
            amount=body.amount,
            reason=body.reason.strip(),
            paid=found.payments[0] if found.payments else None,  # unknown: billing refuses it
        )
        return await command_answer(submitted, response)

    @router.post("/payments/{payment_id}/recheck", responses=COMMAND_RESPONSES)
    async def recheck(
        who: Support,
        payment_id: PaymentPath,
        body: Recheck,
        response: Response,
        idempotency_key: IdempotencyKey,
    ) -> CommandStatus:
        """Ask YooKassa about a top-up now and apply its answer, as its notification would
        (credited once, or closed). Support or admin."""
        submitted = money.recheck(
            key=idempotency_key, operator=who, payment_id=payment_id, reason=body.reason.strip()
        )
        return await command_answer(submitted, response)

    @router.get("/ledger/audit")
    async def ledger_audit(_: Support) -> LedgerAuditResult:
        """Every balance against its ledger sum (`imagebot billing audit`), in one snapshot:
        how many accounts, how many drift, the first of those. Support or admin."""
        return await owners.ledger_audit(LedgerAudit())

    return router


async def _payment(owners: Owners, payment_id: int) -> PaymentRecord:
    if not 0 < payment_id < 2**31:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such payment")
    found = await owners.payments(ListPayments(payment_id=payment_id, limit=1))
    if not found.payments:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such payment")
    return found.payments[0]


class MoneyPages:
    """The panel's money pages."""

    def __init__(self, panel: Panel, owners: Owners, commands: Commands) -> None:
        self._panel = panel
        self._owners = owners
        self._commands = commands
        self._money = Money(commands)

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/panel", include_in_schema=False)
        router.add_api_route("/payments", self.payments, methods=["GET"])
        router.add_api_route("/payments/{payment_id}", self.payment, methods=["GET"])
        router.add_api_route("/payments/{payment_id}/refund", self.refund, methods=["POST"])
        router.add_api_route("/payments/{payment_id}/recheck", self.recheck, methods=["POST"])
        router.add_api_route("/ledger-audit", self.ledger_audit, methods=["GET"])
        return router

    async def payments(self, request: Request, offset: int = 0) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        params = request.query_params
        filters = {
            name: printable(params.get(name))[:40]
            for name in ("user_id", "status", "type", "currency", "method", "from", "until")
        }
        offset = page_offset(offset)
        currency = filters["currency"].upper()
        method = filters["method"].lower()
        search = ListPayments(
            user_id=positive(filters["user_id"]),
            status=filters["status"] if filters["status"] in PAYMENT_STATUSES else None,
            payment_type=filters["type"] if filters["type"] in PAYMENT_TYPES else None,
            currency=currency if re.fullmatch(r"[A-Z]{3}", currency) else None,
            payment_method=method if re.fullmatch(r"[a-z0-9_]+", method) else None,
            created_from=_date(filters["from"]),
            created_until=_date(filters["until"]),
            offset=offset,
            limit=PAGE,
        )
        page = await self._owners.payments(search)
        return self._panel.render(
            request,
            "payments.html",
            {
                "rows": page.payments,
                "page": page,
                "filters": filters,
                "statuses": PAYMENT_STATUSES,
                "types": PAYMENT_TYPES,
                **pager(request, offset, page.total),
            },
        )

    async def payment(self, request: Request, payment_id: int, done: str | None = None) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        return await self._payment_page(request, payment_id, done=done)

    async def _payment_page(
        self,
        request: Request,
        payment_id: int,
        *,
        done: str | None = None,
        errors: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
    ) -> Response:
        if not 0 < payment_id < 2**31:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        payment = await _payment(self._owners, payment_id)
        refunds: PaymentPage | None = None
        if payment.payment_type == "payment":
            refunds = await self._owners.payments(
                ListPayments(refund_of=payment_id, payment_type="refund", limit=PAGE)
            )
        result = None
        if done is not None:
            try:
                result = await self._commands.entry(uuid.UUID(done))
            except ValueError:
                result = None
        context = {
            "payment": payment,
            "refunds": refunds,
            "result": result,
            "errors": errors or {},
            "form": form or {},
            "key": uuid.uuid4(),
        }
        return self._panel.render(
            request, "payment.html", context, status_code=422 if errors else 200
        )

    async def refund(self, request: Request, payment_id: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.support)
        payment = await _payment(self._owners, payment_id)
        raw_amount = (form_text(form.get("amount")) or "").strip()
        reason, reason_error = form_reason(form)
        errors: dict[str, str] = {} if reason_error is None else {"reason": reason_error}
        amount = None
        if raw_amount:
            amount = _minor_units(raw_amount, payment.currency)
            if amount is None:
                errors["amount"] = "amount"
        if errors:
            form_values = {"amount": raw_amount, "reason": reason}
            return await self._payment_page(request, payment_id, errors=errors, form=form_values)
        record = await self._money.refund(
            key=form_key(form),
            operator=self._panel.operator(request),
            payment_id=payment_id,
            amount=amount,
            reason=reason,
            paid=payment,
        )
        return _to_payment(payment_id, record)

    async def recheck(self, request: Request, payment_id: int) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        form = await self._panel.form(request, Role.support)
        await _payment(self._owners, payment_id)
        reason, error = form_reason(form)
        if error is not None:
            errors = {"recheck_reason": error}
            return await self._payment_page(
                request, payment_id, errors=errors, form={"recheck_reason": reason}
            )
        record = await self._money.recheck(
            key=form_key(form),
            operator=self._panel.operator(request),
            payment_id=payment_id,
            reason=reason,
        )
        return _to_payment(payment_id, record)

    async def ledger_audit(self, request: Request) -> Response:
        if (denied := self._panel.signed_out(request)) is not None:
            return denied
        self._panel.require(request, Role.support)
        audit = await self._owners.ledger_audit(LedgerAudit())
        return self._panel.render(request, "ledger_audit.html", {"audit": audit})


def _to_payment(payment_id: int, record: AuditRecord) -> Response:
    return RedirectResponse(
        f"/panel/payments/{payment_id}?{urlencode({'done': str(record.request_id)})}",
        status.HTTP_303_SEE_OTHER,
    )


def _minor_units(text: str, currency: str | None) -> int | None:
    """An amount typed in the panel (rubles `123.45`; whole Stars for XTR) in the payment's
    minor unit; None when it is not one."""
    try:
        value = Decimal(text.replace(",", ".").replace(" ", ""))
    except InvalidOperation:
        return None
    scale = 1 if currency == "XTR" else 100
    minor = value * scale
    if not value.is_finite() or minor != minor.to_integral_value() or not 0 < minor <= 10**12:
        return None
    return int(minor)


def _date(text: str) -> datetime | None:
    """A filter's day (`2026-12-05`) or moment, as UTC; None when blank or not one."""
    try:
        moment = datetime.fromisoformat(text)
        return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # OverflowError: before year 1 or after 9999 in UTC
        return None
