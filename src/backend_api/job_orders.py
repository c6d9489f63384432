"""Operators' orders about a job, in the API (`POST /api/v1/jobs/{job_id}/cancel` and
`.../retry`) and the panel's jobs page. Jobs owns the jobs: each order is a command with the
idempotency key, the operator and a reason, applied once by jobs. A cancel (JobCancelOrdered)
ends the job as its user's cancel does (billing refunds what was debited, a runner stops it, the
user is told), answered by JobOrderApplied; a retry (JobRetryOrdered) runs a failed job again as
a new job of the same inputs at no charge, under the key as its request id (the failed job stays
failed, its refund stands), answered by JobRetried, which the gateway follows the new job by.
JobOrderRefused (`unknown_job`, `finished`, `not_failed`, `never_paid`, `inputs_gone`) refuses
either. The answer settles the audit entry.
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict

from backend_api.api import (
    COMMAND_RESPONSES,
    ERRORS,
    CommandStatus,
    IdempotencyKey,
    Reason,
    command_answer,
    guards,
)
from backend_api.auth import Operators
from backend_api.commands import AuditRecord, Commands, settle
from backend_api.panel import Panel, form_key, form_reason, form_text
from backend_api.settings import Role
from contracts.events import (
    JobCancelOrdered,
    JobOrderApplied,
    JobOrderRefused,
    JobRetried,
    JobRetryOrdered,
)
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

CANCEL_JOB = "job.cancel"
RETRY_JOB = "job.retry"
JobIdPath = Annotated[int, Path(gt=0, le=2**31 - 1)]
Order = Callable[[uuid.UUID, str, int, str], Awaitable[AuditRecord]]
"""An order about a job: (key, operator, job id, reason) -> its audit entry."""


class JobOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class JobOrders:
    def __init__(self, commands: Commands) -> None:
        self._commands = commands

    async def cancel(self, key: uuid.UUID, operator: str, job_id: int, reason: str) -> AuditRecord:
        """Ask jobs to cancel `job_id`; the audit entry, as settled as it got within the wait."""
        command = JobCancelOrdered(request_id=key, operator=operator, reason=reason, job_id=job_id)
        return await self._submit(CANCEL_JOB, command)

    async def retry(self, key: uuid.UUID, operator: str, job_id: int, reason: str) -> AuditRecord:
        """Ask jobs to run the failed `job_id` again, free, as a new job of request `key`; the
        audit entry, as settled as it got within the wait."""
        command = JobRetryOrdered(request_id=key, operator=operator, reason=reason, job_id=job_id)
        return await self._submit(RETRY_JOB, command)

    async def _submit(
        self, action: str, command: JobCancelOrdered | JobRetryOrdered
    ) -> AuditRecord:
        return await self._commands.submit(
            command.request_id,
            command.operator,
            action,
            str(command.job_id),
            {"job_id": command.job_id},
            command.reason,
            command,
        )

    def api_router(self, operators: Operators) -> APIRouter:
        guard = guards(operators)
        Support = Annotated[str, guard.support]
        router = APIRouter(prefix="/api/v1", tags=["jobs"], responses=ERRORS)

        @router.post("/jobs/{job_id}/cancel", responses=COMMAND_RESPONSES)
        async def cancel(
            who: Support,
            job_id: JobIdPath,
            body: JobOrder,
            response: Response,
            idempotency_key: IdempotencyKey,
        ) -> CommandStatus:
            """Cancel a job as its user's cancel does: what was charged goes back, a runner
            stops it, the user is told. Refused (`finished`) once it has ended; `unknown_job`
            for no such job. Support or admin."""
            submitted = self.cancel(idempotency_key, who, job_id, body.reason.strip())
            return await command_answer(submitted, response)

        @router.post("/jobs/{job_id}/retry", responses=COMMAND_RESPONSES)
        async def retry(
            who: Support,
            job_id: JobIdPath,
            body: JobOrder,
            response: Response,
            idempotency_key: IdempotencyKey,
        ) -> CommandStatus:
            """Run a failed job again: a new job of the same inputs for the same user, at no
            charge, whose request id is the idempotency key (the outcome names it,
            `new_job_id`); the user is told in the chat and gets the result there. The failed
            job stays failed and its refund stands. Refused: `not_failed` (it runs still,
            succeeded or was canceled), `never_paid` (it failed before billing debited it:
            no credits, no answer), `inputs_gone` (its prompt or photos were erased),
            `unknown_job`. Support or admin."""
            submitted = self.retry(idempotency_key, who, job_id, body.reason.strip())
            return await command_answer(submitted, response)

        return router

    def panel_router(self, panel: Panel) -> APIRouter:
        router = APIRouter(prefix="/panel/jobs", include_in_schema=False)
        router.add_api_route("/{job_id}/cancel", _form(panel, self.cancel), methods=["POST"])
        router.add_api_route("/{job_id}/retry", _form(panel, self.retry), methods=["POST"])
        return router


def _form(panel: Panel, order: Order) -> Callable[[Request, int], Awaitable[Response]]:
    """A row's form on the jobs page: `order` with the form's reason and key, then back to
    the page it came from, showing the answer (or asking for a reason)."""

    async def submit(request: Request, job_id: int) -> Response:
        if (denied := panel.signed_out(request)) is not None:
            return denied
        form = await panel.form(request, Role.support)
        if not 0 < job_id < 2**31:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        reason, error = form_reason(form)
        back = _back(form_text(form.get("back")) or "")
        separator = "&" if "?" in back else "?"
        if error is not None:
            asked = urlencode({"error": "reason", "job": job_id})
            return RedirectResponse(f"{back}{separator}{asked}", status.HTTP_303_SEE_OTHER)
        record = await order(form_key(form), panel.operator(request), job_id, reason)
        done = urlencode({"done": str(record.request_id)})
        return RedirectResponse(f"{back}{separator}{done}", status.HTTP_303_SEE_OTHER)

    return submit


def _back(path: str) -> str:
    """The jobs page the form came from, with its filters but not the last answer."""
    url = urlsplit(path)
    if url.path != "/panel/jobs" or url.netloc:
        return "/panel/jobs"
    kept = [(k, v) for k, v in parse_qsl(url.query) if k not in ("done", "error", "job")]
    return f"/panel/jobs?{urlencode(kept)}" if kept else "/panel/jobs"


def register(runtime: ServiceRuntime) -> None:
    """Jobs' answers settle the audit entries of operators' orders."""

    @runtime.consumer.on(JobOrderApplied)
    async def applied(event: JobOrderApplied, uow: UnitOfWork) -> None:
        await settle(
            uow,
            event.request_id,
            "applied",
            {"job_id": event.job_id, "was_running": event.was_running},
        )

    @runtime.consumer.on(JobRetried)
    async def retried(event: JobRetried, uow: UnitOfWork) -> None:
        await settle(
            uow,
            event.request_id,
            "applied",
            {"job_id": event.retried_job_id, "new_job_id": event.job_id},
        )

    @runtime.consumer.on(JobOrderRefused)
    async def refused(event: JobOrderRefused, uow: UnitOfWork) -> None:
        await settle(
            uow,
            event.request_id,
            "refused",
            {"job_id": event.job_id, "reason": event.reason.value, "stage": event.stage},
        )
