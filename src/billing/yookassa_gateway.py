"""YooKassa behind a small interface of our own; the synchronous SDK runs in a pool of its own.

The SDK (yookassa 3.x, kept: it is the customer's) passes no timeout to `requests`, so a hung
API would hold a thread for ever and `wait_for` could only stop waiting for it. Its one
transport seam is `ApiClient.get_session()`, called for every request by a client each
resource class (`Payment`, `Refund`) makes in its `__init__`: each gateway's subclasses of those
classes make a client whose sessions carry `_TimeoutAdapter`, a real socket timeout on connect
and on every read, and which is given the gateway's own shop and address (the SDK keeps its
configuration in class attributes, one shop per process: two billings in one process, as the
tests run them against sandboxes of their own, would otherwise call whichever was configured
last). `tests/unit/billing/test_yookassa_transport.py` breaks if an SDK upgrade moves it.
The calls run on a bounded pool of their own (`YOOKASSA_POOL_SIZE`), so slow YooKassa calls
never take the threads anything else runs on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3 import Retry
from yookassa import Configuration, Payment, Refund
from yookassa.client import ApiClient
from yookassa.domain.exceptions import (
    ApiError,
    InternalServerError,
    NotFoundError,
    TooManyRequestsError,
)

from billing.domain import RemotePayment, RemoteRefund, amount_value, to_kopecks
from billing.settings import YooKassaSettings

log = logging.getLogger(__name__)


class ProviderUnavailableError(ConnectionError):
    """YooKassa did not answer, timed out or failed on its side: another try may succeed."""


class ProviderRejectedError(Exception):
    """YooKassa refused the request itself: retrying the same request will not help."""


class PaymentNotFoundError(Exception):
    """YooKassa knows no payment (or refund) with this id."""


@dataclass(frozen=True)
class PaymentDraft:
    amount_kopecks: int
    currency: str
    description: str
    metadata: dict[str, str]
    return_url: str
    receipt: dict[str, Any] | None = None
    """A 54-FZ receipt (`billing.receipts`), when the shop sends them."""


@dataclass(frozen=True)
class RefundDraft:
    yookassa_payment_id: str
    amount_kopecks: int
    currency: str
    description: str
    receipt: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class PaymentProvider(Protocol):
    async def create(self, draft: PaymentDraft, idempotency_key: str) -> RemotePayment: ...

    async def fetch(self, yookassa_id: str) -> RemotePayment: ...

    async def cancel(self, yookassa_id: str, idempotency_key: str) -> RemotePayment: ...

    async def refund(self, draft: RefundDraft, idempotency_key: str) -> RemoteRefund: ...

    async def fetch_refund(self, refund_id: str) -> RemoteRefund: ...


class _TimeoutAdapter(HTTPAdapter):
    """Every request through it gets `timeout` (connect, read) unless the caller gave one."""

    def __init__(self, timeout_s: float, **kwargs: Any) -> None:
        self.timeout_s = timeout_s
        super().__init__(**kwargs)

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (self.timeout_s, self.timeout_s)
        return super().send(request, *args, **kwargs)


@dataclass(frozen=True)
class Shop:
    """Whose API a client calls, and how long it waits for a socket."""

    shop_id: str
    secret_key: str = field(repr=False)
    api_url: str
    timeout_s: float


class _Client(ApiClient):  # type: ignore[misc]
    """The SDK's client for `shop`, its sessions' transport given a socket timeout."""

    def __init__(self, shop: Shop) -> None:
        super().__init__()
        self.endpoint = shop.api_url
        self.shop_id, self.shop_password, self.auth_token = shop.shop_id, shop.secret_key, None
        self.timeout_s = shop.timeout_s

    def get_session(self) -> requests.Session:
        session: requests.Session = super().get_session()
        sdk_adapter = session.get_adapter("https://")
        retries = sdk_adapter.max_retries if isinstance(sdk_adapter, HTTPAdapter) else Retry(0)
        # The SDK's retries (YooKassa's 202 "come back later") are kept, but not a read that
        # timed out: four of them with its backoff would hold the thread for a minute.
        adapter = _TimeoutAdapter(self.timeout_s, max_retries=retries.new(read=0))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session


def _resource(base: type[Any], shop: Shop) -> type[Any]:
    """The SDK's resource class `base` (Payment, Refund), its calls made by `shop`'s client;
    the SDK's classes left as they are."""

    def __init__(self: Any) -> None:
        self.client = _Client(shop)

    return type(base.__name__, (base,), {"__init__": __init__})


class YooKassaGateway:
    """The `yookassa` SDK, configured once; every call in the pool, with a socket timeout."""

    def __init__(self, settings: YooKassaSettings) -> None:
        self._timeout_s = settings.timeout_s
        shop = Shop(
            settings.shop_id,
            settings.secret_key.get_secret_value(),
            settings.api_url,
            settings.timeout_s,
        )
        # The SDK's clients read its class-level configuration first (and refuse to be made
        # without one); ours then put their own shop in place of it.
        Configuration.configure(shop.shop_id, shop.secret_key, api_url=shop.api_url)
        self.payments, self.refunds = _resource(Payment, shop), _resource(Refund, shop)
        self._pool = ThreadPoolExecutor(settings.pool_size, thread_name_prefix="yookassa")

    async def create(self, draft: PaymentDraft, idempotency_key: str) -> RemotePayment:
        params: dict[str, Any] = {
            "amount": {"value": amount_value(draft.amount_kopecks), "currency": draft.currency},
            "capture": True,
            "confirmation": {"type": "redirect", "return_url": draft.return_url},
            "description": draft.description[:128],
            "metadata": draft.metadata,
        }
        if draft.receipt is not None:
            params["receipt"] = draft.receipt
        response = await self._call(self.payments.create, params, idempotency_key)
        return remote_payment(dict(response))

    async def fetch(self, yookassa_id: str) -> RemotePayment:
        response = await self._call(self.payments.find_one, yookassa_id)
        return remote_payment(dict(response))

    async def cancel(self, yookassa_id: str, idempotency_key: str) -> RemotePayment:
        response = await self._call(self.payments.cancel, yookassa_id, idempotency_key)
        return remote_payment(dict(response))

    async def refund(self, draft: RefundDraft, idempotency_key: str) -> RemoteRefund:
        params: dict[str, Any] = {
            "payment_id": draft.yookassa_payment_id,
            "amount": {"value": amount_value(draft.amount_kopecks), "currency": draft.currency},
            "description": draft.description[:250],
        }
        if draft.metadata:
            params["metadata"] = draft.metadata
        if draft.receipt is not None:
            params["receipt"] = draft.receipt
        response = await self._call(self.refunds.create, params, idempotency_key)
        return remote_refund(dict(response))

    async def fetch_refund(self, refund_id: str) -> RemoteRefund:
        response = await self._call(self.refunds.find_one, refund_id)
        return remote_refund(dict(response))

    async def _call(self, function: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args)
        try:
            # The socket timeout frees the thread; this bound also covers the wait for one.
            return await asyncio.wait_for(
                loop.run_in_executor(self._pool, call), self._timeout_s * 3
            )
        except NotFoundError as exc:
            raise PaymentNotFoundError(str(exc)) from exc
        except (InternalServerError, TooManyRequestsError) as exc:
            raise ProviderUnavailableError(f"YooKassa: {exc}") from exc
        except ApiError as exc:
            raise ProviderRejectedError(f"YooKassa: {exc}") from exc
        except (TimeoutError, OSError, requests.RequestException) as exc:
            raise ProviderUnavailableError(f"YooKassa unreachable: {exc!r}") from exc
        except AttributeError as exc:  # the SDK's way of saying "no response at all"
            raise ProviderUnavailableError(f"YooKassa unreachable: {exc!r}") from exc


def _kopecks(amount: Mapping[str, Any] | None) -> int | None:
    return None if not amount else to_kopecks(str(amount["value"]))


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def remote_payment(data: dict[str, Any]) -> RemotePayment:
    """YooKassa's payment object as our value; raises ValueError when it is not one."""
    try:
        amount = data["amount"]
        method = data.get("payment_method") or {}
        confirmation = data.get("confirmation") or {}
        cancellation = data.get("cancellation_details") or {}
        return RemotePayment(
            id=str(data["id"]),
            status=str(data["status"]),
            amount_kopecks=to_kopecks(str(amount["value"])),
            currency=str(amount["currency"]),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            confirmation_url=confirmation.get("confirmation_url"),
            method_type=method.get("type"),
            method_details={k: v for k, v in method.items() if k != "type"},
            cancellation_reason=cancellation.get("reason"),
            captured_at=_moment(data.get("captured_at")),
            income_kopecks=_kopecks(data.get("income_amount")),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a YooKassa payment: {exc!r}") from exc


def remote_refund(data: dict[str, Any]) -> RemoteRefund:
    """YooKassa's refund object as our value; raises ValueError when it is not one."""
    try:
        amount = data["amount"]
        return RemoteRefund(
            id=str(data["id"]),
            payment_id=str(data["payment_id"]),
            status=str(data["status"]),
            amount_kopecks=to_kopecks(str(amount["value"])),
            currency=str(amount["currency"]),
            created_at=_moment(data.get("created_at")),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a YooKassa refund: {exc!r}") from exc
