"""Billing and jobs over request/reply, with timeouts; silence or refusal means 'busy'."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TypeVar

from pydantic import BaseModel

from contracts.rpc import (
    Account,
    EnsureAccount,
    GetReceiptPolicy,
    JobHistory,
    ListJobs,
    ListPresets,
    ListStarsPackages,
    ListTopUpPackages,
    PresetCatalog,
    ReceiptPolicy,
    Request,
    StarsPackages,
    TopUpPackages,
)
from messaging.rpc import BROKER_TROUBLE, RpcClient, RpcRefusedError

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", bound=BaseModel)


class ServiceBusyError(Exception):
    """Billing or jobs did not answer in time (or refused): the user is asked to retry."""


class Backends:
    def __init__(self, rpc: RpcClient, *, catalog_ttl_s: float) -> None:
        self._rpc = rpc
        self._catalog_ttl_s = catalog_ttl_s
        self._catalog: PresetCatalog | None = None
        self._catalog_read_at = 0.0
        self._catalog_lock = asyncio.Lock()

    async def _call(self, request: Request, result_type: type[ResultT]) -> ResultT:
        try:
            return await self._rpc.call(request, result_type)
        except TimeoutError as exc:
            log.warning("rpc %s timed out", request.method)
            raise ServiceBusyError(request.method) from exc
        except RpcRefusedError as exc:
            log.warning("rpc %s refused: %s", request.method, exc)
            raise ServiceBusyError(request.method) from exc
        except BROKER_TROUBLE as exc:
            log.warning("rpc %s: broker unreachable: %r", request.method, exc)
            raise ServiceBusyError(request.method) from exc

    async def ensure_account(self, telegram_id: int, username: str | None) -> Account:
        return await self._call(EnsureAccount(telegram_id=telegram_id, username=username), Account)

    async def packages(self) -> TopUpPackages:
        return await self._call(ListTopUpPackages(), TopUpPackages)

    async def stars_packages(self) -> StarsPackages:
        return await self._call(ListStarsPackages(), StarsPackages)

    async def receipts(self) -> bool:
        """Whether billing sends 54-FZ receipts, so a ruble top-up needs the buyer's contact."""
        return (await self._call(GetReceiptPolicy(), ReceiptPolicy)).receipts

    async def history(self, user_id: int, limit: int) -> JobHistory:
        return await self._call(ListJobs(user_id=user_id, limit=limit), JobHistory)

    async def catalog(self) -> PresetCatalog:
        """The cached catalog; reread after PresetsChanged or when older than the TTL."""
        async with self._catalog_lock:
            stale = time.monotonic() - self._catalog_read_at > self._catalog_ttl_s
            if self._catalog is None or stale:
                self._catalog = await self._call(ListPresets(), PresetCatalog)
                self._catalog_read_at = time.monotonic()
            return self._catalog

    def forget_catalog(self) -> None:
        self._catalog = None
