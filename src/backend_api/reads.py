"""Reads go to the owners, by request/reply: billing (accounts, ledger, payments), jobs and the
gateway (broadcasts, users).

Nothing is copied here, so a read sees exactly what the owner holds, rows older than any event
included (an adopted database). A silent owner is a 503, a refused request a 422 or 502.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException, status
from pydantic import BaseModel

from contracts.rpc import (
    AccountPage,
    AudienceSize,
    BroadcastPage,
    CountAudience,
    CountJobs,
    CountMoney,
    CountUsers,
    GatewayProfile,
    GetGatewayProfile,
    JobPage,
    JobStats,
    LedgerAudit,
    LedgerAuditResult,
    LedgerPage,
    ListAllPresets,
    ListBroadcasts,
    ListLedger,
    ListPayments,
    MoneyStats,
    PaymentPage,
    PresetPage,
    Request,
    SearchAccounts,
    SearchJobs,
    UserStats,
)
from messaging.rpc import BROKER_TROUBLE, RpcClient, RpcRefusedError

ResultT = TypeVar("ResultT", bound=BaseModel)


class Owners:
    def __init__(self, rpc: RpcClient) -> None:
        self._rpc = rpc

    async def accounts(self, request: SearchAccounts) -> AccountPage:
        return await self._call(request, AccountPage)

    async def ledger(self, request: ListLedger) -> LedgerPage:
        return await self._call(request, LedgerPage)

    async def payments(self, request: ListPayments) -> PaymentPage:
        return await self._call(request, PaymentPage)

    async def jobs(self, request: SearchJobs) -> JobPage:
        return await self._call(request, JobPage)

    async def ledger_audit(self, request: LedgerAudit) -> LedgerAuditResult:
        return await self._call(request, LedgerAuditResult)

    async def gateway_profile(self, telegram_id: int | None) -> GatewayProfile | None:
        """What the gateway knows of the user; None when they have no Telegram id or the
        gateway did not answer (the rest of a profile does not wait on it)."""
        if telegram_id is None:
            return None
        try:
            return await self._call(GetGatewayProfile(telegram_id=telegram_id), GatewayProfile)
        except HTTPException:
            return None

    async def audience(self, request: CountAudience) -> AudienceSize:
        return await self._call(request, AudienceSize)

    async def broadcasts(self, request: ListBroadcasts) -> BroadcastPage:
        return await self._call(request, BroadcastPage)

    async def user_stats(self, request: CountUsers) -> UserStats:
        return await self._call(request, UserStats)

    async def job_stats(self, request: CountJobs) -> JobStats:
        return await self._call(request, JobStats)

    async def money_stats(self, request: CountMoney) -> MoneyStats:
        return await self._call(request, MoneyStats)

    async def all_presets(self, request: ListAllPresets) -> PresetPage:
        return await self._call(request, PresetPage)

    async def _call(self, request: Request, result_type: type[ResultT]) -> ResultT:
        try:
            return await self._rpc.call(request, result_type)
        except RpcRefusedError as exc:
            code = (
                status.HTTP_422_UNPROCESSABLE_CONTENT
                if exc.code.startswith("invalid")
                else status.HTTP_502_BAD_GATEWAY
            )
            raise HTTPException(code, detail=f"{request.method}: {exc.code}") from exc
        except (TimeoutError, *BROKER_TROUBLE) as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"{request.method}: no answer"
            ) from exc
