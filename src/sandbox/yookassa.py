"""A sandbox YooKassa (API v3 payments and its checkout page), for the real `yookassa` SDK.

The API: POST /v3/payments (honouring Idempotence-Key: a repeated key returns the payment it
created first), GET /v3/payments/{id}. A payment's confirmation URL is this server's checkout
page, `/checkout/{id}`: GET shows the amount, POST pays. Paying (or `pay`) marks the payment
succeeded and sends the notification YooKassa would to every URL in `notify_urls`, retrying
until one answers 200, as YooKassa does. Tests also change a payment's status with `set_status`
and make the API fail with `fail_next`.
"""

from __future__ import annotations

import asyncio
import copy
import html
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from sandbox.server import listen


@dataclass
class YooKassaSandbox:
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    create_calls: int = 0
    failures: list[int] = field(default_factory=list)
    port: int = 0
    notify_urls: list[str] = field(default_factory=list)
    """Where payment notifications go (billing's `/webhooks/yookassa`), round robin."""
    notifications_sent: int = 0
    _runner: web.AppRunner | None = None
    _deliveries: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v3/payments", self._create)
        app.router.add_get("/v3/payments/{payment_id}", self._find)
        app.router.add_get("/checkout/{payment_id}", self._checkout_page)
        app.router.add_post("/checkout/{payment_id}", self._checkout)
        self._runner, self.port = await listen(app)

    async def stop(self) -> None:
        for delivery in self._deliveries:
            delivery.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def pay(self, payment_id: str) -> asyncio.Task[None]:
        """The buyer pays: the payment succeeds and its notification is on its way."""
        self.set_status(payment_id, "succeeded")
        delivery = asyncio.create_task(self._notify(self.notification(payment_id)))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)
        return delivery

    async def _notify(self, body: dict[str, Any]) -> None:
        attempt = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while self.notify_urls:
                url = self.notify_urls[attempt % len(self.notify_urls)]
                attempt += 1
                try:
                    async with http.post(url, json=body) as answer:
                        if answer.status == 200:
                            self.notifications_sent += 1
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(min(0.2 * attempt, 2.0))

    def fail_next(self, count: int, status: int = 500) -> None:
        self.failures.extend([status] * count)

    def set_status(self, payment_id: str, status: str, **changes: Any) -> dict[str, Any]:
        payment = self.payments[payment_id]
        payment["status"] = status
        payment["paid"] = status == "succeeded"
        if status == "succeeded":
            payment["captured_at"] = _now()
            payment["payment_method"] = {
                "type": "bank_card",
                "id": payment_id,
                "saved": False,
                "title": "Bank card *4444",
            }
        if status == "canceled":
            payment["cancellation_details"] = {
                "party": "yoo_money",
                "reason": "expired_on_confirmation",
            }
        payment.update(changes)
        return copy.deepcopy(payment)

    def notification(self, payment_id: str, event: str | None = None) -> dict[str, Any]:
        """The body YooKassa would POST for the payment as it stands (or claiming `event`)."""
        payment = copy.deepcopy(self.payments[payment_id])
        return {
            "type": "notification",
            "event": event or f"payment.{payment['status']}",
            "object": payment,
        }

    def _error(self, status: int, code: str, description: str) -> web.Response:
        body = {"type": "error", "id": str(uuid.uuid4()), "code": code, "description": description}
        return web.json_response(body, status=status)

    def _failure(self) -> web.Response | None:
        if self.failures:
            status = self.failures.pop(0)
            return self._error(status, "internal_server_error", "fake failure")
        return None

    async def _create(self, request: web.Request) -> web.Response:
        self.create_calls += 1
        if (failure := self._failure()) is not None:
            return failure
        if not request.headers.get("Authorization", "").startswith("Basic "):
            return self._error(401, "invalid_credentials", "no credentials")
        key = request.headers.get("Idempotence-Key")
        if not key:
            return self._error(400, "invalid_request", "Idempotence-Key is required")
        if key in self.by_key:
            return web.json_response(self.payments[self.by_key[key]])
        params = await request.json()
        amount = params.get("amount") or {}
        if amount.get("value") in (None, "0.00"):
            return self._error(400, "invalid_request", "amount is required")
        payment_id = f"2{uuid.uuid4().hex[:7]}-000f-5000-8000-{uuid.uuid4().hex[:12]}"
        payment = {
            "id": payment_id,
            "status": "pending",
            "paid": False,
            "amount": {"value": amount["value"], "currency": amount["currency"]},
            "description": params.get("description", ""),
            "recipient": {"account_id": "000000", "gateway_id": "000001"},
            "created_at": _now(),
            "confirmation": {
                "type": "redirect",
                "confirmation_url": f"http://127.0.0.1:{self.port}/checkout/{payment_id}",
            },
            "test": True,
            "refundable": False,
            "metadata": params.get("metadata") or {},
        }
        self.payments[payment_id] = payment
        self.by_key[key] = payment_id
        return web.json_response(payment)

    async def _find(self, request: web.Request) -> web.Response:
        if (failure := self._failure()) is not None:
            return failure
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None:
            return self._error(404, "not_found", "payment not found")
        return web.json_response(payment)

    async def _checkout_page(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None:
            return web.Response(status=404, text="no such payment")
        amount = f"{payment['amount']['value']} {payment['amount']['currency']}"
        page = (
            f"<h1>Sandbox checkout</h1><p>{html.escape(payment['description'])}: {amount}</p>"
            f"<p>Status: {payment['status']}</p>"
            '<form method="post"><button>Pay (sandbox, no money moves)</button></form>'
        )
        return web.Response(text=page, content_type="text/html")

    async def _checkout(self, request: web.Request) -> web.Response:
        payment_id = request.match_info["payment_id"]
        payment = self.payments.get(payment_id)
        if payment is None:
            return web.Response(status=404, text="no such payment")
        if payment["status"] == "pending":
            self.pay(payment_id)
        return web.Response(text=f"payment {payment['status']}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
