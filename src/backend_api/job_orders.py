"""Operators' orders about a job: cancel, in the API (`POST /api/v1/jobs/{job_id}/cancel`) and
the panel's jobs page. Jobs owns the jobs: the cancel is a command (JobCancelOrdered) with the
idempotency key, the operator and a reason, applied once by jobs as a user's cancel is (billing
refunds what was debited, a runner stops it, the user is told) and answered by JobOrderApplied
or JobOrderRefused (`unknown_job`, `finished`), which settle the audit entry.

No retry yet: a failed job was refunded and its user told; running it again needs the gateway
to follow a job its user did not ask for (docs/architecture.md, "not built yet").
"""

import uuid
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
from contracts.events import JobCancelOrdered, JobOrderApplied, JobOrderRefused
from messaging.runtime import ServiceRuntime
from messaging.unit_of_work import UnitOfWork

CANCEL_JOB = "job.cancel"
JobIdPath = Annotated[int, Path(gt=0, le=2**31 - 1)]


class JobCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason


class JobOrders:
    def __init__(self, commands: Commands) -> None:
        self._commands = commands

    async def cancel(self, key: uuid.UUID, operator: str, job_id: int, reason: str) -> AuditRecord:
        """Ask jobs to cancel `job_id`; the audit entry, as settled as it got within the wait."""
        command = JobCancelOrdered(request_id=key, operator=operator, reason=reason, job_id=job_id)
        return await self._commands.submit(
            key, operator, CANCEL_JOB, str(job_id), {"job_id": job_id}, reason, command
        )

    def api_router(self, operators: Operators) -> APIRouter:
        guard = guards(operators)
        Support = Annotated[str, guard.support]
        router = APIRouter(prefix="/api/v1", tags=["jobs"], responses=ERRORS)

        @router.post("/jobs/{job_id}/cancel", responses=COMMAND_RESPONSES)
        async def cancel(
            who: Support,
            job_id: JobIdPath,
            body: JobCancel,
            response: Response,
            idempotency_key: IdempotencyKey,
        ) -> CommandStatus:
            """Cancel a job as its user's cancel does: what was charged goes back, a runner
            stops it, the user is told. Refused (`finished`) once it has ended; `unknown_job`
            for no such job. Support or admin."""
            submitted = self.cancel(idempotency_key, who, job_id, body.reason.strip())
            return await command_answer(submitted, response)

        return router

    def panel_router(self, panel: Panel) -> APIRouter:
        router = APIRouter(prefix="/panel/jobs", include_in_schema=False)

        async def cancel(request: Request, job_id: int) -> Response:
            if (denied := panel.signed_out(request)) is not None:
                return denied
            form = await panel.form(request, Role.support)
            if not 0 < job_id < 2**31:
                raise HTTPException(status.HTTP_404_NOT_FOUND)
            reason, error = form_reason(form)
            back = _back(form_text(form.get("back")) or "")
            separator = "&" if "?" in back else "?"
            if error is not None:
                error = urlencode({"error": "reason", "job": job_id})
                return RedirectResponse(f"{back}{separator}{error}", status.HTTP_303_SEE_OTHER)
            record = await self.cancel(form_key(form), panel.operator(request), job_id, reason)
            done = urlencode({"done": str(record.request_id)})
            return RedirectResponse(f"{back}{separator}{done}", status.HTTP_303_SEE_OTHER)

        router.add_api_route("/{job_id}/cancel", cancel, methods=["POST"])
        return router


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

    @runtime.consumer.on(JobOrderRefused)
    async def refused(event: JobOrderRefused, uow: UnitOfWork) -> None:
        await settle(
            uow,
            event.request_id,
            "refused",
            {"job_id": event.job_id, "reason": event.reason.value, "stage": event.stage},
        )
