"""A sandbox YooKassa (API v3 payments, refunds and its checkout page), for the real SDK.

The API: POST /v3/payments (honouring Idempotence-Key: a repeated key returns the payment it
created first), GET /v3/payments/{id}, POST /v3/payments/{id}/cancel (only a payment
`waiting_for_capture`, as the real API), POST /v3/refunds (whole or part of a succeeded
payment, never more than is left; idempotent likewise), GET /v3/refunds/{id}. With
`require_receipts` it answers a payment or refund without a valid 54-FZ receipt as YooKassa
answers a receipts-on shop: 400 "Receipt is missing or illegal". A payment's confirmation URL
is this server's checkout page, `/checkout/{id}`: GET shows the amount, POST pays. Paying (or
`pay`) marks the payment succeeded and sends the notification YooKassa would to every URL in
`notify_urls`, retrying until one answers 200, as YooKassa does; a refund sends
`refund.succeeded` likewise. Tests also change a payment's status with `set_status`, make the
API fail with `fail_next` and hang with `hang_next`.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    require_receipts: bool = False
    """Answer a payment or refund without a valid receipt 400, as a receipts-on shop's API."""
    receipts: list[dict[str, Any]] = field(default_factory=list)
    """Every receipt accepted, in order."""
    hangs: list[float] = field(default_factory=list)
    fee_percent: int = 3
    refunds_pending: bool = False
    """Refunds are answered `pending` (as for some methods) and finished by `set_refund_status`."""
    """YooKassa's commission: `income_amount` is the amount less this."""
    _runner: web.AppRunner | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _deliveries: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v3/payments", self._create)
        app.router.add_get("/v3/payments/{payment_id}", self._find)
        app.router.add_post("/v3/payments/{payment_id}/cancel", self._cancel)
        app.router.add_post("/v3/refunds", self._create_refund)
        app.router.add_get("/v3/refunds/{refund_id}", self._find_refund)
        app.router.add_get("/checkout/{payment_id}", self._checkout_page)
        app.router.add_post("/checkout/{payment_id}", self._checkout)
        self._runner, self.port = await listen(app)

    async def stop(self) -> None:
        self._stopping.set()  # hung calls answer now
        for delivery in self._deliveries:
            delivery.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def pay(self, payment_id: str) -> asyncio.Task[None]:
        """The buyer pays: the payment succeeds and its notification is on its way."""
        self.set_status(payment_id, "succeeded")
        return self._deliver(self.notification(payment_id))

    def _deliver(self, body: dict[str, Any]) -> asyncio.Task[None]:
        delivery = asyncio.create_task(self._notify(body))
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

    def hang_next(self, count: int, seconds: float = 60.0) -> None:
        """The next `count` API calls answer nothing for `seconds` (a hung YooKassa)."""
        self.hangs.extend([seconds] * count)

    def set_status(self, payment_id: str, status: str, **changes: Any) -> dict[str, Any]:
        payment = self.payments[payment_id]
        payment["status"] = status
        payment["paid"] = status == "succeeded"
        if status == "succeeded":
            payment["captured_at"] = _now()
            kopecks = _kopecks(payment["amount"]["value"])
            income = kopecks - kopecks * self.fee_percent // 100
            payment["income_amount"] = {
                "value": _value(income),
                "currency": payment["amount"]["currency"],
            }
            payment["refundable"] = True
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

    def refund(self, payment_id: str, kopecks: int, description: str = "") -> str:
        """A refund of `kopecks` of the payment succeeds (as the API's, or the shop refunding
        in YooKassa's dashboard) and its notification is on its way; its id."""
        payment = self.payments[payment_id]
        currency = payment["amount"]["currency"]
        refunded = _kopecks(payment.get("refunded_amount", {}).get("value", "0.00"))
        refund_id = f"2{uuid.uuid4().hex[:7]}-0015-5000-9000-{uuid.uuid4().hex[:12]}"
        self.refunds[refund_id] = {
            "id": refund_id,
            "payment_id": payment_id,
            "status": "pending" if self.refunds_pending else "succeeded",
            "created_at": _now(),
            "amount": {"value": _value(kopecks), "currency": currency},
            "description": description,
        }
        payment["refunded_amount"] = {"value": _value(refunded + kopecks), "currency": currency}
        if not self.refunds_pending:
            self._deliver(self.refund_notification(refund_id))
        return refund_id

    def set_refund_status(self, refund_id: str, status: str) -> None:
        """A pending refund finishes (`succeeded` or `canceled`); no notification is sent."""
        self.refunds[refund_id]["status"] = status

    def refund_notification(self, refund_id: str) -> dict[str, Any]:
        refund = copy.deepcopy(self.refunds[refund_id])
        return {"type": "notification", "event": f"refund.{refund['status']}", "object": refund}

    async def _failure(self) -> web.Response | None:
        if self.hangs:
            with contextlib.suppress(TimeoutError):  # hung until then, or until stop()
                await asyncio.wait_for(self._stopping.wait(), self.hangs.pop(0))
        if self.failures:
            status = self.failures.pop(0)
            return self._error(status, "internal_server_error", "fake failure")
        return None

    async def _create(self, request: web.Request) -> web.Response:
        self.create_calls += 1
        if (failure := await self._failure()) is not None:
            return failure
        if not request.headers.get("Authorization", "").startswith("Basic "):
            return self._error(401, "invalid_credentials", "no credentials")
        key = request.headers.get("Idempotence-Key")
        if not key:
            return self._error(400, "invalid_request", "Idempotence-Key is required")
        params = await request.json()  # read first: from the key's check to its record, no await
        if key in self.by_key:
            return web.json_response(self.payments[self.by_key[key]])
        amount = params.get("amount") or {}
        if amount.get("value") in (None, "0.00"):
            return self._error(400, "invalid_request", "amount is required")
        if (refused := self._check_receipt(params, amount)) is not None:
            return refused
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
                "return_url": (params.get("confirmation") or {}).get("return_url", ""),
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
        if (failure := await self._failure()) is not None:
            return failure
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None:
            return self._error(404, "not_found", "payment not found")
        return web.json_response(payment)

    async def _cancel(self, request: web.Request) -> web.Response:
        if (failure := await self._failure()) is not None:
            return failure
        if not request.headers.get("Idempotence-Key"):
            return self._error(400, "invalid_request", "Idempotence-Key is required")
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None:
            return self._error(404, "not_found", "payment not found")
        if payment["status"] == "canceled":
            return web.json_response(payment)
        if payment["status"] != "waiting_for_capture":
            return self._error(
                400, "invalid_request", f"Payment in status {payment['status']} can't be canceled"
            )
        payment = self.set_status(
            payment["id"],
            "canceled",
            cancellation_details={"party": "merchant", "reason": "canceled_by_merchant"},
        )
        return web.json_response(payment)

    async def _create_refund(self, request: web.Request) -> web.Response:
        if (failure := await self._failure()) is not None:
            return failure
        key = request.headers.get("Idempotence-Key")
        if not key:
            return self._error(400, "invalid_request", "Idempotence-Key is required")
        params = await request.json()  # read first: from the key's check to its record, no await
        if key in self.by_key:
            return web.json_response(self.refunds[self.by_key[key]])
        payment = self.payments.get(str(params.get("payment_id")))
        if payment is None:
            return self._error(404, "not_found", "payment not found")
        if payment["status"] != "succeeded":
            return self._error(400, "invalid_request", "payment is not succeeded")
        amount = params.get("amount") or {}
        kopecks = _kopecks(str(amount.get("value", "0")))
        refunded = _kopecks(payment.get("refunded_amount", {}).get("value", "0.00"))
        if kopecks <= 0 or refunded + kopecks > _kopecks(payment["amount"]["value"]):
            return self._error(400, "invalid_request", "refund amount exceeds the payment's")
        if (refused := self._check_receipt(params, amount)) is not None:
            return refused
        refund_id = self.refund(payment["id"], kopecks, params.get("description", ""))
        self.by_key[key] = refund_id
        refund = self.refunds[refund_id]
        return web.json_response(refund)

    async def _find_refund(self, request: web.Request) -> web.Response:
        if (failure := await self._failure()) is not None:
            return failure
        refund = self.refunds.get(request.match_info["refund_id"])
        if refund is None:
            return self._error(404, "not_found", "refund not found")
        return web.json_response(refund)

    def _check_receipt(self, params: dict[str, Any], amount: dict[str, Any]) -> web.Response | None:
        """A receipts-on shop's check: a customer contact, items adding up to the amount, each
        with its VAT code, payment subject and mode."""
        receipt = params.get("receipt")
        if not self.require_receipts:
            return None
        problem = _receipt_problem(receipt, amount)
        if problem is not None:
            body = {
                "type": "error",
                "id": str(uuid.uuid4()),
                "code": "invalid_request",
                "description": "Receipt is missing or illegal",
                "parameter": f"receipt{problem}",
            }
            return web.json_response(body, status=400)
        self.receipts.append(receipt)  # type: ignore[arg-type]
        return None

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


def _receipt_problem(receipt: Any, amount: dict[str, Any]) -> str | None:
    if not isinstance(receipt, dict):
        return ""
    customer = receipt.get("customer") or {}
    if not (customer.get("email") or customer.get("phone")):
        return ".customer"
    items = receipt.get("items") or []
    if not items:
        return ".items"
    total = 0
    for item in items:
        if not all(item.get(k) for k in ("description", "quantity", "vat_code", "amount")):
            return ".items"
        if not item.get("payment_subject") or not item.get("payment_mode"):
            return ".items"
        total += round(_kopecks(item["amount"]["value"]) * float(item["quantity"]))
    if total != _kopecks(str(amount.get("value", "0"))):
        return ".items.amount"
    return None


def _kopecks(value: str) -> int:
    rubles, _, kopecks = value.partition(".")
    return int(rubles) * 100 + int((kopecks + "00")[:2])


def _value(kopecks: int) -> str:
    return f"{kopecks // 100}.{kopecks % 100:02d}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
