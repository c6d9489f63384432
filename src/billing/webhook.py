"""`POST /webhooks/yookassa`: YooKassa's notifications, which are not signed.

Steps, each with its own answer: the sender must be in YooKassa's ranges (403; a trusted
proxy's X-Forwarded-For is believed, nobody else's; a malformed one is 400); JSON of at most
the size limit (415, 413, 400); a payment notification of a payment we created, or a
`refund.succeeded` of one (400, 404); the object re-fetched from the API, and only that
version trusted: its status must agree with the notification and its amount, currency and
metadata with our row (409, 422); then the row settles at most once. 200 only after the
commit; 503 when YooKassa or the database is in trouble, so YooKassa retries.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

from faststream.asgi.types import Receive, Scope, Send
from sqlalchemy.exc import DBAPIError
from yookassa.domain.notification import WebhookNotificationFactory

from billing import payments, refunds
from billing.domain import NOTIFICATION_STATUS, payment_mismatches
from billing.services import settle_payment
from billing.settings import WebhookSettings
from billing.yookassa_gateway import (
    PaymentNotFoundError,
    PaymentProvider,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from messaging.metrics import WEBHOOK_RESPONSES
from messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REFUND_SUCCEEDED = "refund.succeeded"


class Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_networks(spec: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part.strip()) for part in spec.split(",") if part.strip())


class YooKassaWebhook:
    """A raw ASGI app; every answer is logged with its reason."""

    def __init__(
        self,
        settings: WebhookSettings,
        provider: PaymentProvider,
        unit_of_work: Callable[[], UnitOfWork],
    ) -> None:
        self._allowed = parse_networks(settings.allowed_networks)
        self._proxies = parse_networks(settings.trusted_proxies)
        self._max_body = settings.max_body_bytes
        self._provider = provider
        self._unit_of_work = unit_of_work

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, reason = 200, await self._handle(scope, receive)
        except Refusal as refusal:
            status, reason = refusal.status, refusal.reason
            log.warning("yookassa webhook from %s: %d %s", _peer(scope), status, reason)
        except (ProviderUnavailableError, DBAPIError, OSError) as exc:
            status, reason = 503, "temporarily unavailable"
            log.error("yookassa webhook: %r; answering 503 so YooKassa retries", exc)
        WEBHOOK_RESPONSES.labels("yookassa", str(status)).inc()
        await _respond(send, status, reason)

    async def _handle(self, scope: Scope, receive: Receive) -> str:
        if scope.get("method") != "POST":
            raise Refusal(405, "only POST")
        address = self.sender(scope)
        if not any(address in network for network in self._allowed):
            raise Refusal(403, f"sender {address} is not in YooKassa's ranges")
        headers = _headers(scope)
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise Refusal(415, f"content type {media_type or 'none'!r}, want application/json")
        body = await self._body(headers, receive)
        yookassa_id, event, refunded_payment = self.parse(body)
        if event == REFUND_SUCCEEDED:
            return await self._refund(yookassa_id, refunded_payment)
        async with self._unit_of_work() as uow:
            local = await payments.find(uow, payments.by_yookassa_id(yookassa_id))
        if local is None:
            raise Refusal(404, f"unknown payment {yookassa_id}")
        try:
            remote = await self._provider.fetch(yookassa_id)
        except PaymentNotFoundError:
            raise Refusal(400, f"YooKassa knows no payment {yookassa_id}") from None
        except ProviderRejectedError as exc:
            raise ProviderUnavailableError(str(exc)) from exc
        if NOTIFICATION_STATUS[event] != remote.status:
            raise Refusal(409, f"notification says {event}, the API says {remote.status}")
        if problems := payment_mismatches(local, remote):
            log.error("payment %s: the API contradicts our row: %s", local.id, problems)
            raise Refusal(422, "payment does not match ours: " + "; ".join(problems))
        async with self._unit_of_work() as uow:
            outcome = await settle_payment(uow, local, remote)
            await uow.commit()
        log.info(
            "yookassa webhook %s for payment %s: %s", event, local.id, outcome.settlement.value
        )
        return outcome.settlement.value

    async def _refund(self, refund_id: str, yookassa_payment_id: str | None) -> str:
        """A refund of one of our top-ups succeeded (ours, or made in YooKassa's dashboard):
        its credits come out once."""
        try:
            remote = await self._provider.fetch_refund(refund_id)
        except PaymentNotFoundError:
            raise Refusal(400, f"YooKassa knows no refund {refund_id}") from None
        except ProviderRejectedError as exc:
            raise ProviderUnavailableError(str(exc)) from exc
        if remote.status != "succeeded":
            raise Refusal(409, f"notification says succeeded, the API says {remote.status}")
        if yookassa_payment_id is not None and yookassa_payment_id != remote.payment_id:
            raise Refusal(422, "the refund is of another payment than the notification says")
        async with self._unit_of_work() as uow:
            topup = await payments.find(uow, payments.by_yookassa_id(remote.payment_id))
            row = await payments.find(uow, payments.by_refund_id(refund_id))
        if topup is None:
            raise Refusal(404, f"refund {refund_id} of a payment that is not ours")
        if row is not None and (row.amount_kopecks, row.currency) != (
            remote.amount_kopecks,
            remote.currency,
        ):
            raise Refusal(422, f"refund {refund_id} does not match ours")
        async with self._unit_of_work() as uow:
            if row is None:
                row = await refunds.adopt_refund(uow, topup, remote)
                assert row is not None
            if row.status != "pending":
                return "done"
            await refunds.apply_refund(uow, row, remote)
        log.info("yookassa webhook refund.succeeded %s of payment %s", refund_id, topup.id)
        return "refunded"

    def sender(self, scope: Scope) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The peer, or, behind our own trusted proxies, the last address they vouch for."""
        client = scope.get("client")
        if not client:
            raise Refusal(403, "no client address")
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            raise Refusal(400, f"malformed client address {client[0]!r}") from None
        if not any(peer in network for network in self._proxies):
            return peer
        forwarded = _headers(scope).get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:
                raise Refusal(400, f"malformed X-Forwarded-For {forwarded!r}") from None
            if not any(address in network for network in self._proxies):
                return address
        return peer

    async def _body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise Refusal(413, f"body of {declared} bytes exceeds {self._max_body}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refusal(400, "client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise Refusal(413, f"body exceeds {self._max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def parse(body: bytes) -> tuple[str, str, str | None]:
        """(YooKassa object id, notification event, the refunded payment's id) of a payment
        notification or a `refund.succeeded`."""
        try:
            data = json.loads(body)
            notification = WebhookNotificationFactory().create(data)
            event = str(notification.event)
            object_id = notification.object.id
            refunded = getattr(notification.object, "payment_id", None)
        except Exception as exc:
            raise Refusal(400, f"malformed notification: {exc}") from None
        if event not in NOTIFICATION_STATUS and event != REFUND_SUCCEEDED:
            raise Refusal(400, f"not a notification billing subscribes to: {event!r}")
        if not isinstance(object_id, str) or not 0 < len(object_id) <= 100:
            raise Refusal(400, "notification without an object id")
        if event == REFUND_SUCCEEDED and not isinstance(refunded, str):
            raise Refusal(400, "refund notification without a payment id")
        return object_id, event, refunded if event == REFUND_SUCCEEDED else None


def _headers(scope: Scope) -> dict[str, str]:
    return {
        key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]
    }


def _peer(scope: Scope) -> Any:
    client = scope.get("client")
    return client[0] if client else None


async def _respond(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"status": status, "detail": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
