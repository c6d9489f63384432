"""The operators' API end to end: reads answered by billing and jobs, an adjustment applied
once by billing (and refused when it must be), every write in the audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from billing import services
from billing.models import DELIVERY as BILLING
from billing.models import Payment, PaymentStatus
from contracts.events import credits_text
from jobs.models import Job
from messaging.unit_of_work import UnitOfWork
from support.backend_harness import (
    OPERATOR,
    PASSWORD,
    SUPPORT,
    VIEWER,
    Running,
)
from support.billing_harness import new_telegram_id, scalar

pytestmark = pytest.mark.integration


async def open_account(engine: AsyncEngine, username: str) -> tuple[int, int, int]:
    """(user_id, telegram_id, balance) of a new account opened as the bot opens them."""
    telegram_id = new_telegram_id()
    async with UnitOfWork(engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, telegram_id, username, 60)
    return account.user_id, telegram_id, account.balance


async def get(running: Running, path: str, **params: Any) -> Any:
    async with running.client() as client, client.get(path, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def adjust(
    running: Running, key: uuid.UUID | None, **body: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Idempotency-Key": str(key)} if key else {}
    async with (
        running.client() as client,
        client.post("/api/v1/credit-adjustments", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_nothing_but_health_without_signing_in(running: Running) -> None:
    async with running.client(signed_in=False) as client:
        for path in ("/api/v1/users", "/api/v1/jobs", "/api/v1/audit", "/api/v1/me"):
            async with client.get(path) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with client.get("/panel/users", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/panel/login"
        async with client.get("/healthz") as response:
            assert response.status == 200
        async with client.get("/openapi.json") as response:
            document = await response.json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/credit-adjustments" in document["paths"]
    wrong = {"Authorization": "Bearer not-a-session-token"}
    async with (
        running.client(signed_in=False) as client,
        client.get("/api/v1/me", headers=wrong) as response,
    ):
        assert response.status == 401
    async with running.client() as client, client.get("/api/v1/me") as response:
        assert await response.json() == {"operator": OPERATOR, "role": "admin"}


async def test_search_by_telegram_id_and_username_prefix(
    running: Running, backend_engine: AsyncEngine
) -> None:
    tag = uuid.uuid4().hex[:8]
    first = await open_account(backend_engine, f"Zoe_{tag}_one")
    second = await open_account(backend_engine, f"zoe_{tag}_two")
    await open_account(backend_engine, f"other_{tag}")

    exact = await get(running, "/api/v1/users", telegram_id=first[1])
    assert [user["user_id"] for user in exact["items"]] == [first[0]]
    assert exact["total"] == 1

    prefix = await get(running, "/api/v1/users", username=f"ZOE_{tag}")
    assert [user["user_id"] for user in prefix["items"]] == [first[0], second[0]]  # by name
    assert prefix["total"] == 2
    paged = await get(running, "/api/v1/users", username=f"zoe_{tag}", limit=1, offset=1)
    assert [user["user_id"] for user in paged["items"]] == [second[0]]
    assert paged["total"] == 2
    # LIKE's wildcards are taken literally
    assert (await get(running, "/api/v1/users", username=f"zoe%{tag}"))["total"] == 0


async def test_an_adjustment_is_applied_once_and_audited(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, telegram_id, balance = await open_account(
        backend_engine, f"adj_{uuid.uuid4().hex[:6]}"
    )
    key = uuid.uuid4()
    body = {"telegram_id": telegram_id, "credits": 25, "reason": "compensation for a bad render"}

    code, applied = await adjust(running, key, **body)
    assert code == 200, applied
    assert applied["status"] == "applied"
    assert applied["operator"] == OPERATOR
    # balances are exact decimal strings (an adopted account may hold 12.5 credits)
    assert applied["outcome"] == {"user_id": user_id, "balance": credits_text(balance + 25)}

    code, again = await adjust(running, key, **body)  # a retry: nothing moves twice
    assert (code, again["status"], again["outcome"]) == (200, "applied", applied["outcome"])
    entries = await scalar(
        backend_engine,
        "SELECT count(*) FROM billing_ledger WHERE idempotency_key = :k",
        k=f"operator:{key}",
    )
    assert entries == 1

    profile = await get(running, f"/api/v1/users/{user_id}")
    assert profile["account"]["balance"] == credits_text(balance + 25)
    (entry, *_) = profile["ledger"]["items"]
    assert (entry["kind"], entry["amount"]) == ("adjustment", "25")
    assert "compensation for a bad render" in entry["reason"]
    assert OPERATOR in entry["reason"]

    code, conflict = await adjust(running, key, **{**body, "credits": 26})
    assert code == 409, conflict

    audit = await get(running, "/api/v1/audit", target=str(telegram_id))
    assert audit["total"] == 1
    (record,) = audit["items"]
    assert (record["operator"], record["action"], record["reason"]) == (
        OPERATOR,
        "credits.adjust",
        "compensation for a bad render",
    )
    assert record["request_id"] == str(key)


async def test_an_adjustment_below_zero_or_to_nobody_is_refused(
    running: Running, backend_engine: AsyncEngine
) -> None:
    _, telegram_id, balance = await open_account(backend_engine, f"neg_{uuid.uuid4().hex[:6]}")

    code, refused = await adjust(
        running, uuid.uuid4(), telegram_id=telegram_id, credits=-int(balance + 1), reason="abuse"
    )
    assert code == 200
    assert refused["status"] == "refused"
    assert refused["outcome"] == {"reason": "below_zero", "balance": credits_text(balance)}

    code, taken = await adjust(
        running, uuid.uuid4(), telegram_id=telegram_id, credits=-int(balance), reason="abuse"
    )
    assert (code, taken["status"], taken["outcome"]["balance"]) == (200, "applied", "0")

    code, nobody = await adjust(
        running, uuid.uuid4(), telegram_id=new_telegram_id(), credits=5, reason="typo"
    )
    assert (code, nobody["status"], nobody["outcome"]["reason"]) == (
        200,
        "refused",
        "unknown_account",
    )


@pytest.mark.parametrize(
    ("with_key", "body"),
    [
        (False, {"credits": 5, "reason": "no key"}),
        (True, {"credits": 0, "reason": "zero"}),
        (True, {"credits": 5, "reason": ""}),
        (True, {"credits": 5, "reason": "   "}),
        (True, {"credits": 5}),
        (True, {"credits": "five", "reason": "not a number"}),
    ],
)
async def test_nothing_moves_without_a_key_and_a_reason(
    running: Running, backend_engine: AsyncEngine, with_key: bool, body: dict[str, Any]
) -> None:
    _, telegram_id, balance = await open_account(backend_engine, f"bad_{uuid.uuid4().hex[:6]}")
    code, answer = await adjust(
        running, uuid.uuid4() if with_key else None, telegram_id=telegram_id, **body
    )
    assert code == 422, answer
    assert answer["detail"]
    found = await get(running, "/api/v1/users", telegram_id=telegram_id)
    assert found["items"][0]["balance"] == credits_text(balance)


async def test_jobs_list_filters_and_pages(running: Running, backend_engine: AsyncEngine) -> None:
    user_id, telegram_id, _ = await open_account(backend_engine, f"jobs_{uuid.uuid4().hex[:6]}")
    now = datetime.now(UTC)
    rows = [
        {"stage": "completed", "preset_id": 1, "created_at": now - timedelta(hours=3)},
        {"stage": "failed", "preset_id": 1, "created_at": now - timedelta(hours=2)},
        {"stage": "completed", "preset_id": 2, "created_at": now - timedelta(hours=1)},
    ]
    async with backend_engine.begin() as connection:
        ids = [
            (
                await connection.execute(
                    insert(Job)
                    .values(
                        user_id=user_id,
                        telegram_id=telegram_id,
                        prompt="a cat",
                        price=30,
                        request_id=uuid.uuid4(),
                        **row,
                    )
                    .returning(Job.id)
                )
            ).scalar_one()
            for row in rows
        ]
    everything = await get(running, "/api/v1/jobs", user_id=user_id)
    assert [job["job_id"] for job in everything["items"]] == ids[::-1]
    completed = await get(running, "/api/v1/jobs", user_id=user_id, status="completed")
    assert [job["job_id"] for job in completed["items"]] == [ids[2], ids[0]]
    by_preset = await get(running, "/api/v1/jobs", user_id=user_id, preset_id=1)
    assert by_preset["total"] == 2
    recent = await get(
        running,
        "/api/v1/jobs",
        user_id=user_id,
        created_from=(now - timedelta(hours=2, minutes=30)).isoformat(),
        created_until=(now - timedelta(minutes=30)).isoformat(),
    )
    assert [job["job_id"] for job in recent["items"]] == [ids[2], ids[1]]
    page = await get(running, "/api/v1/jobs", user_id=user_id, limit=1, offset=2)
    assert ([job["job_id"] for job in page["items"]], page["total"]) == ([ids[0]], 3)
    profile = await get(running, f"/api/v1/users/{user_id}")
    assert profile["jobs"]["total"] == 3


async def test_each_role_reaches_what_it_may_and_nothing_more(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, telegram_id, balance = await open_account(
        backend_engine, f"roles_{uuid.uuid4().hex[:6]}"
    )
    body = {"telegram_id": telegram_id, "credits": 3, "reason": "goodwill"}

    async def status_of(login: str, method: str, path: str, **kwargs: Any) -> int:
        async with (
            running.client(login=login) as client,
            client.request(method, path, **kwargs) as response,
        ):
            return response.status

    async def roles_me(login: str) -> Any:
        async with running.client(login=login) as client, client.get("/api/v1/me") as response:
            return await response.json()

    assert await roles_me(VIEWER) == {"operator": VIEWER, "role": "viewer"}
    assert await roles_me(SUPPORT) == {"operator": SUPPORT, "role": "support"}
    for login in (VIEWER, SUPPORT, OPERATOR):  # every role reads
        assert await status_of(login, "GET", f"/api/v1/users/{user_id}") == 200, login
        assert await status_of(login, "GET", "/api/v1/jobs") == 200, login
    adjust = {"json": body, "headers": {"Idempotency-Key": str(uuid.uuid4())}}
    assert await status_of(VIEWER, "POST", "/api/v1/credit-adjustments", **adjust) == 403
    assert await status_of(VIEWER, "GET", "/api/v1/audit") == 403
    assert await status_of(SUPPORT, "GET", "/api/v1/audit") == 403
    assert await status_of(SUPPORT, "POST", "/api/v1/credit-adjustments", **adjust) == 200
    assert await status_of(OPERATOR, "GET", "/api/v1/audit") == 200
    profile = await get(running, f"/api/v1/users/{user_id}")
    assert profile["account"]["balance"] == credits_text(balance + 3)  # the support's, once


async def test_sign_ins_are_refused_unchecked_after_five_failures(running: Running) -> None:
    wrong = {"login": VIEWER, "password": "not the password"}
    right = {"login": VIEWER, "password": PASSWORD}
    async with running.client(signed_in=False) as client:
        for _ in range(5):
            async with client.post("/api/v1/sessions", json=wrong) as response:
                assert response.status == 401
        async with client.post("/api/v1/sessions", json=right) as response:  # even the right one
            assert response.status == 429
            assert 0 < int(response.headers["Retry-After"]) <= 300


async def test_payments_filter_page_and_total_per_currency(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, _, _ = await open_account(backend_engine, f"pay_{uuid.uuid4().hex[:6]}")
    rows = [
        ("RUB", 10_000, PaymentStatus.succeeded),
        ("RUB", 25_000, PaymentStatus.succeeded),
        ("RUB", 5_000, PaymentStatus.pending),
        ("XTR", 50, PaymentStatus.succeeded),
    ]
    async with backend_engine.begin() as connection:
        for currency, amount, status in rows:
            await connection.execute(
                insert(Payment).values(
                    user_id=user_id, amount=amount, currency=currency, status=status
                )
            )
    succeeded = await get(running, "/api/v1/payments", user_id=user_id, status="succeeded", limit=1)
    assert succeeded["total"] == 3
    assert len(succeeded["items"]) == 1  # the page; the totals are of every match
    assert succeeded["totals"] == [
        {"currency": "RUB", "payments": 2, "amount": 35_000},
        {"currency": "XTR", "payments": 1, "amount": 50},
    ]
    everything = await get(running, "/api/v1/payments", user_id=user_id)
    assert everything["totals"][0] == {"currency": "RUB", "payments": 3, "amount": 40_000}
