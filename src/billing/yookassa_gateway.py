"""YooKassa behind a small interface of our own; the synchronous SDK runs in a worker thread."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from yookassa import Configuration, Payment
from yookassa.domain.exceptions import (
    ApiError,
    InternalServerError,
    NotFoundError,
    TooManyRequestsError,
)

from billing.domain import RemotePayment, amount_value, to_kopecks
from billing.settings import YooKassaSettings

log = logging.getLogger(__name__)


class ProviderUnavailableError(ConnectionError):
    """YooKassa did not answer, timed out or failed on its side: another try may succeed."""


class ProviderRejectedError(Exception):
    """YooKassa refused the request itself: retrying the same request will not help."""


class PaymentNotFoundError(Exception):
    """YooKassa knows no payment with this id."""


@dataclass(frozen=True)
class PaymentDraft:
    amount_kopecks: int
    currency: str
    description: str
    metadata: dict[str, str]
    return_url: str


class PaymentProvider(Protocol):
    async def create(self, draft: PaymentDraft, idempotency_key: str) -> RemotePayment: ...

    async def fetch(self, yookassa_id: str) -> RemotePayment: ...


class YooKassaGateway:
    """The `yookassa` SDK, configured once, every call off the event loop with a timeout."""

    def __init__(self, settings: YooKassaSettings) -> None:
        self._timeout_s = settings.timeout_s
        # The SDK keeps its configuration in class attributes: one shop per process.
        Configuration.configure(
            settings.shop_id, settings.secret_key.get_secret_value(), api_url=settings.api_url
        )

    async def create(self, draft: PaymentDraft, idempotency_key: str) -> RemotePayment:
        params = {
            "amount": {"value": amount_value(draft.amount_kopecks), "currency": draft.currency},
            "capture": True,
            "confirmation": {"type": "redirect", "return_url": draft.return_url},
            "description": draft.description[:128],
            "metadata": draft.metadata,
        }
        response = await self._call(Payment.create, params, idempotency_key)
        return remote_payment(dict(response))

    async def fetch(self, yookassa_id: str) -> RemotePayment:
        response = await self._call(Payment.find_one, yookassa_id)
        return remote_payment(dict(response))

    async def _call(self, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(function, *args), self._timeout_s)
        except NotFoundError as exc:
            raise PaymentNotFoundError(str(exc)) from exc
        except (InternalServerError, TooManyRequestsError) as exc:
            raise ProviderUnavailableError(f"YooKassa: {exc}") from exc
        except ApiError as exc:
            raise ProviderRejectedError(f"YooKassa: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise ProviderUnavailableError(f"YooKassa unreachable: {exc!r}") from exc
        except AttributeError as exc:  # the SDK's way of saying "no response at all"
            raise ProviderUnavailableError(f"YooKassa unreachable: {exc!r}") from exc


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
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a YooKassa payment: {exc!r}") from exc
