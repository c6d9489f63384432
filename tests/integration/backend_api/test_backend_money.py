"""Money through the operators' API, against the real billing (and a YooKassa sandbox): a top-up
refunded to its buyer (whole, part, never twice, never more than was paid), a payment re-checked
with YooKassa and credited once, the ledger audit, the payments' filters and totals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from support.backend_harness import OPERATOR, SUPPORT, VIEWER, Running, topup
from support.billing_harness import balance_of, ledger_sum, open_account, scalar

pytestmark = pytest.mark.integration


async def post(
    running: Running, path: str, body: dict[str, Any], key: uuid.UUID | None, login: str = SUPPORT
) -> tuple[int, dict[str, Any]]:
    headers = {"Idempotency-Key": str(key)} if key else {}
    async with (
        running.client(login=login) as client,
        client.post(path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def get(running: Running, path: str, **params: Any) -> Any:
    async with running.client() as client, client.get(path, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_refund_goes_back_to_the_buyer_once_and_is_audited(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, _ = await open_account(backend_engine, balance=0, welcome=0)
    payment_id, yookassa_id = await topup(running, backend_engine, user_id)
    assert await balance_of(backend_engine, user_id) == 100
    key = uuid.uuid4()
    path = f"/api/v1/payments/{payment_id}/refund"

    code, refunded = await post(running, path, {"amount": 4000, "reason": "ticket 7"}, key)
    assert code == 200, refunded
    assert (refunded["status"], refunded["action"], refunded["operator"]) == (
        "applied",
        "payment.refund",
        SUPPORT,
    )
    assert refunded["outcome"]["outcome"] == "refunded"
    assert (refunded["outcome"]["amount"], refunded["outcome"]["credits"]) == (4000, 40)
    assert refunded["payload"] == {"payment_id": payment_id, "amount": 4000}
    code, again = await post(running, path, {"amount": 4000, "reason": "ticket 7"}, key)
    assert (code, again["outcome"]) == (200, refunded["outcome"])  # a retry moves nothing
    assert running.yookassa is not None
    assert [r["payment_id"] for r in running.yookassa.refunds.values()] == [yookassa_id]
    assert await balance_of(backend_engine, user_id) == 60
    assert await ledger_sum(backend_engine, user_id) == 60

    code, rest = await post(running, path, {"reason": "the rest"}, uuid.uuid4(), login=OPERATOR)
    assert (code, rest["status"], rest["outcome"]["amount"]) == (200, "applied", 6000)
    code, more = await post(running, path, {"reason": "once more"}, uuid.uuid4())
    assert (code, more["status"], more["outcome"]["outcome"]) == (200, "refused", "too_much")
    assert await balance_of(backend_engine, user_id) == 0
    listed = await get(running, "/api/v1/payments", refund_of=payment_id, payment_type="refund")
    assert sorted(row["amount_kopecks"] for row in listed["items"]) == [4000, 6000]
    assert listed["totals"] == [{"currency": "RUB", "payments": 2, "amount": 10_000}]
    audit = await get(running, "/api/v1/audit", action="payment.refund", target=str(payment_id))
    assert [(row["reason"], row["status"]) for row in audit["items"]] == [
        ("once more", "refused"),
        ("the rest", "applied"),
        ("ticket 7", "applied"),
    ]


async def test_refunds_are_refused_to_viewers_without_a_key_or_reason_and_of_no_top_up(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, _ = await open_account(backend_engine, balance=0, welcome=0)
    payment_id, _ = await topup(running, backend_engine, user_id)
    path = f"/api/v1/payments/{payment_id}/refund"
    code, _ = await post(running, path, {"reason": "viewer"}, uuid.uuid4(), login=VIEWER)
    assert code == 403
    for key, body in (
        (None, {"reason": "no key"}),
        (uuid.uuid4(), {}),
        (uuid.uuid4(), {"reason": "  "}),
        (uuid.uuid4(), {"amount": 0, "reason": "zero"}),
        (uuid.uuid4(), {"amount": "10", "reason": "text"}),
    ):
        code, answer = await post(running, path, body, key)
        assert code == 422, (body, answer)
    code, nobody = await post(
        running, "/api/v1/payments/999999999/refund", {"reason": "x"}, uuid.uuid4()
    )
    assert (code, nobody["status"], nobody["outcome"]["outcome"]) == (
        200,
        "refused",
        "unknown_payment",
    )
    unpaid, _ = await topup(running, backend_engine, user_id, paid=False)
    code, pending = await post(
        running, f"/api/v1/payments/{unpaid}/refund", {"reason": "unpaid"}, uuid.uuid4()
    )
    assert (pending["status"], pending["outcome"]["outcome"]) == ("refused", "not_refundable")
    assert await balance_of(backend_engine, user_id) == 100
    assert running.yookassa is not None
    assert not [r for r in running.yookassa.refunds.values() if r["payment_id"] == payment_id]


async def test_a_recheck_credits_a_payment_whose_notification_was_lost_once(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, _ = await open_account(backend_engine, balance=0, welcome=0)
    payment_id, yookassa_id = await topup(running, backend_engine, user_id, paid=False)
    path = f"/api/v1/payments/{payment_id}/recheck"

    code, still = await post(running, path, {"reason": "buyer says paid"}, uuid.uuid4())
    assert (code, still["status"]) == (200, "applied")
    assert (still["outcome"]["outcome"], still["outcome"]["status"]) == ("wait", "pending")
    assert running.yookassa is not None
    running.yookassa.set_status(yookassa_id, "succeeded")  # paid; the notification never came
    key = uuid.uuid4()
    code, credited = await post(running, path, {"reason": "buyer says paid"}, key)
    assert (code, credited["status"]) == (200, "applied")
    assert credited["outcome"] == {
        "outcome": "credit",
        "status_before": "pending",
        "status": "succeeded",
        "provider_status": "succeeded",
        "detail": "",
    }
    assert await balance_of(backend_engine, user_id) == 100
    code, again = await post(running, path, {"reason": "again"}, uuid.uuid4())
    assert (again["status"], again["outcome"]["outcome"]) == ("applied", "done")
    assert await balance_of(backend_engine, user_id) == 100
    assert await ledger_sum(backend_engine, user_id) == 100
    [row] = (await get(running, "/api/v1/payments", user_id=user_id))["items"]
    assert (row["status"], row["paid_at"] is not None) == ("succeeded", True)

    code, nobody = await post(
        running, "/api/v1/payments/999999998/recheck", {"reason": "x"}, uuid.uuid4()
    )
    assert (nobody["status"], nobody["outcome"]["outcome"]) == ("refused", "unknown_payment")
    code, _viewer = await post(running, path, {"reason": "x"}, uuid.uuid4(), login=VIEWER)
    assert code == 403


async def test_the_ledger_audit_finds_a_balance_that_drifts_from_its_ledger(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, telegram_id = await open_account(backend_engine, balance=30)
    clean = await get(running, "/api/v1/ledger/audit")
    assert clean["checked"] > 0
    assert user_id not in [drift["user_id"] for drift in clean["drifts"]]
    async with backend_engine.begin() as connection:  # a hand edit behind the ledger's back
        await connection.execute(
            text("UPDATE users SET balance = balance + 5 WHERE user_id = :u"), {"u": user_id}
        )
    try:
        audit = await get(running, "/api/v1/ledger/audit")
        assert audit["drifting"] == clean["drifting"] + 1
        [drift] = [drift for drift in audit["drifts"] if drift["user_id"] == user_id]
        assert drift == {
            "user_id": user_id,
            "telegram_id": telegram_id,
            "balance": "35",
            "ledger_sum": "30",
        }
    finally:
        async with backend_engine.begin() as connection:
            await connection.execute(
                text("UPDATE users SET balance = balance - 5 WHERE user_id = :u"), {"u": user_id}
            )
    async with running.client(login=VIEWER) as client, client.get("/api/v1/ledger/audit") as r:
        assert r.status == 403


async def test_payments_filter_by_currency_method_type_and_time(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, _ = await open_account(backend_engine, balance=0, welcome=0)
    first, _ = await topup(running, backend_engine, user_id, kopecks=5_000)
    second, _ = await topup(running, backend_engine, user_id, kopecks=7_000)
    now = datetime.now(UTC)
    async with backend_engine.begin() as connection:
        await connection.execute(
            text("UPDATE payments SET created_at = :t, payment_method = 'sbp' WHERE id = :p"),
            {"t": now - timedelta(days=3), "p": first},
        )
    mine = {"user_id": user_id}
    sbp = await get(running, "/api/v1/payments", method="sbp", **mine)
    assert [row["id"] for row in sbp["items"]] == [first]
    assert sbp["totals"] == [{"currency": "RUB", "payments": 1, "amount": 5_000}]
    recent = await get(
        running,
        "/api/v1/payments",
        created_from=(now - timedelta(days=1)).isoformat(),
        created_until=(now + timedelta(hours=1)).isoformat(),
        **mine,
    )
    assert [row["id"] for row in recent["items"]] == [second]
    rubles = await get(running, "/api/v1/payments", currency="RUB", payment_type="payment", **mine)
    assert rubles["total"] == 2
    assert rubles["totals"] == [{"currency": "RUB", "payments": 2, "amount": 12_000}]
    assert (await get(running, "/api/v1/payments", currency="XTR", **mine))["total"] == 0
    one = await get(running, f"/api/v1/payments/{second}")
    assert (one["id"], one["amount_kopecks"], one["payment_method"]) == (second, 7_000, "card")
    async with running.client() as client:
        async with client.get("/api/v1/payments/999999997") as response:
            assert response.status == 404
        async with client.get("/api/v1/payments", params={"currency": "rub"}) as response:
            assert response.status == 422
    assert await scalar(backend_engine, "SELECT 1") == 1


async def test_payment_totals_stay_equal_to_the_payments_and_answer_the_page(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, _ = await open_account(backend_engine, balance=0, welcome=0)
    payment_id, _ = await topup(running, backend_engine, user_id, kopecks=30_000)
    await post(
        running,
        f"/api/v1/payments/{payment_id}/refund",
        {"amount": 500, "reason": "x"},
        uuid.uuid4(),
    )
    async with backend_engine.begin() as connection:  # writers the triggers must follow too
        await connection.execute(
            text("UPDATE payments SET created_at = created_at - interval '2 days' WHERE id = :p"),
            {"p": payment_id},
        )
        await connection.execute(
            text(
                "INSERT INTO payments (user_id, amount, currency, status, payment_type) "
                "SELECT :u, 100 * g, 'XTR', 'failed', 'payment' FROM generate_series(1, 3) g"
            ),
            {"u": user_id},
        )
        await connection.execute(
            text("DELETE FROM payments WHERE user_id = :u AND amount = 200"), {"u": user_id}
        )
    by_group = (
        "SELECT (created_at AT TIME ZONE 'UTC')::date, currency, status::text, "
        "payment_type::text, payment_method, count(*), coalesce(sum(amount), 0) "
        "FROM payments GROUP BY 1, 2, 3, 4, 5"
    )
    kept = (
        "SELECT day, currency, status::text, payment_type::text, payment_method, payments, amount"
        " FROM payment_totals WHERE payments <> 0"
    )
    async with backend_engine.connect() as connection:
        counted = set((await connection.execute(text(by_group))).all())
        totals = set((await connection.execute(text(kept))).all())
    assert totals == counted

    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for params in (  # answered from the totals table, then from the payments themselves
        {"created_from": (midnight - timedelta(days=3)).isoformat(), "currency": "XTR"},
        {"created_from": (midnight - timedelta(days=3)).isoformat(), "status": "succeeded"},
        {"user_id": user_id},
    ):
        page = await get(running, "/api/v1/payments", **params)
        where = ["created_at >= :since" if "created_from" in params else "user_id = :u"]
        where += [f"{name}::text = :{name}" for name in ("currency", "status") if name in params]
        direct = (
            "SELECT currency, count(*), coalesce(sum(amount), 0) FROM payments "
            f"WHERE {' AND '.join(where)} GROUP BY 1 ORDER BY 1"
        )
        async with backend_engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(direct),
                    {
                        "since": midnight - timedelta(days=3),
                        "u": user_id,
                        **{k: v for k, v in params.items() if k in ("currency", "status")},
                    },
                )
            ).all()
        expected = [{"currency": c, "payments": n, "amount": a} for c, n, a in rows]
        assert page["totals"] == expected, params
        assert page["total"] == sum(row["payments"] for row in expected)


async def test_a_long_list_counts_to_a_cap_and_says_so(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, _ = await open_account(backend_engine, balance=0, welcome=0)
    async with backend_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO jobs (user_id, stage, status, preset_id, price) "
                "SELECT :u, CASE WHEN g <= 3 THEN 'failed' ELSE 'completed' END, "
                "CASE WHEN g <= 3 THEN 'failed' ELSE 'completed' END::jobstatus, 1, 5 "
                "FROM generate_series(1, 1050) g"
            ),
            {"u": user_id},
        )
    first = await get(running, "/api/v1/jobs", user_id=user_id, limit=50)
    assert (first["total"], first["total_exact"], len(first["items"])) == (1_000, False, 50)
    further = await get(running, "/api/v1/jobs", user_id=user_id, offset=100, limit=50)
    assert (further["total"], further["total_exact"]) == (1_050, True)
    failed = await get(running, "/api/v1/jobs", user_id=user_id, status="failed")
    assert (failed["total"], failed["total_exact"]) == (3, True)
    users = await get(running, "/api/v1/users", telegram_id=7)
    assert users["total_exact"] is True
