"""A local stand-in for YooKassa's API (v3 payments), for the real `yookassa` SDK to talk to.

Implements POST /v3/payments (honouring Idempotence-Key: a repeated key returns the payment it
created first), GET /v3/payments/{id}; tests change a payment's status with `set_status` and
make the API fail with `fail_next`.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web


@dataclass
class FakeYooKassa:
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    create_calls: int = 0
    failures: list[int] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v3/payments", self._create)
        app.router.add_get("/v3/payments/{payment_id}", self._find)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

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
                "confirmation_url": f"https://yoomoney.test/checkout?orderId={payment_id}",
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


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
