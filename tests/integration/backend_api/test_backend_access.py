"""Access to the operators' API: accounts made by `imagebot admin`, admins' second factor
(a code good once), sessions listed and revoked at once, and a large write held until a
second operator approves it (sent once however often approved)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from typing import Any

import pyotp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from backend_api.auth import LoginThrottle, TooManyAttemptsError
from billing import services
from billing.models import DELIVERY as BILLING
from messaging.unit_of_work import UnitOfWork
from support.backend_harness import (
    OPERATOR,
    PASSWORD,
    SUPPORT,
    VIEWER,
    Running,
    bearer,
    topup,
    totp_code,
)
from support.billing_harness import new_telegram_id, scalar
from support.billing_harness import open_account as open_billing_account

pytestmark = pytest.mark.integration


async def imagebot_admin(
    database_url: str, *args: str, password: str | None = None
) -> tuple[int, str]:
    """`imagebot admin ARGS` against the test's database, the password on stdin: (exit, output)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imagebot",
        "admin",
        *args,
        env={**os.environ, "DATABASE_URL": database_url},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(f"{password}\n".encode() if password else b"")
    assert process.returncode is not None
    return process.returncode, output.decode()


async def sign_in(running: Running, login: str, password: str, code: str | None = None) -> Any:
    """POST /api/v1/sessions: (status, body)."""
    body = {"login": login, "password": password, **({"code": code} if code else {})}
    async with (
        running.client(signed_in=False) as client,
        client.post("/api/v1/sessions", json=body) as response,
    ):
        return response.status, await response.json()


async def status_with(running: Running, token: str, method: str, path: str) -> int:
    async with (
        running.client(signed_in=False) as client,
        client.request(method, path, headers={"Authorization": bearer(token)}) as response,
    ):
        return response.status


async def test_failed_sign_ins_count_on_every_replica_and_leave_the_window(
    backend_engine: AsyncEngine,
) -> None:
    sessions = async_sessionmaker(backend_engine)
    one, other = (LoginThrottle(sessions, attempts=3, window_s=300) for _ in range(2))
    login, address = f"replica_{uuid.uuid4().hex[:8]}", f"address-{uuid.uuid4()}"
    elsewhere = f"address-{uuid.uuid4()}"
    for replica in (one, other):
        await replica.failed(login, address)
    await other.check(login, elsewhere)  # two failures: not yet
    await one.failed(login, address)
    with pytest.raises(TooManyAttemptsError) as refused:  # the third, counted by another replica
        await other.check(login, elsewhere)
    assert 299 < refused.value.retry_after_s <= 300
    with pytest.raises(TooManyAttemptsError):  # the address, for any login
        await LoginThrottle(sessions, attempts=3, window_s=300).check("someone", address)
    await other.forget(login)  # a sign-in that succeeded: the login's count starts again
    await one.check(login, elsewhere)
    with pytest.raises(TooManyAttemptsError):
        await one.check(login, address)
    brief = LoginThrottle(sessions, attempts=1, window_s=0.5)
    await brief.failed(login, elsewhere)
    with pytest.raises(TooManyAttemptsError):
        await brief.check(login, elsewhere)
    await asyncio.sleep(0.6)
    await brief.check(login, elsewhere)  # the failure has left the window


async def test_operators_are_made_and_changed_with_imagebot_admin(
    running: Running, backend_database_url: str
) -> None:
    login = f"ops_{uuid.uuid4().hex[:8]}"
    password = "a long enough passphrase"
    code, output = await imagebot_admin(
        backend_database_url, "create-user", login, "--role", "admin", password=password
    )
    assert code == 0, output
    assert password not in output
    secret = re.search(r"secret=([A-Z2-7]+)", output)
    assert secret is not None, output
    assert "otpauth://totp/" in output

    status, body = await sign_in(running, login, password)  # an admin: no code, no session
    assert status == 401, body
    status, body = await sign_in(running, login, password, pyotp.TOTP(secret[1]).now())
    assert status == 201, body
    token = body["token"]
    assert body["role"] == "admin"

    code, output = await imagebot_admin(backend_database_url, "set-role", login, "viewer")
    assert code == 0, output
    async with (
        running.client(signed_in=False) as client,
        client.get("/api/v1/me", headers={"Authorization": bearer(token)}) as response,
    ):  # the open session has the new role at its next request
        assert await response.json() == {"operator": login, "role": "viewer"}
    assert await status_with(running, token, "GET", "/api/v1/audit") == 403

    code, output = await imagebot_admin(backend_database_url, "disable", login)
    assert code == 0, output
    assert await status_with(running, token, "GET", "/api/v1/me") == 401  # at once
    assert (await sign_in(running, login, password, pyotp.TOTP(secret[1]).now()))[0] == 401

    code, output = await imagebot_admin(backend_database_url, "list")
    assert re.search(rf"^{login}\tviewer, totp, disabled ", output, re.MULTILINE), output
    code, output = await imagebot_admin(
        backend_database_url, "create-user", login, password=password
    )
    assert (code, output.strip()) == (1, f"{login} exists already")
    code, output = await imagebot_admin(
        backend_database_url, "create-user", f"{login}x", password="short"
    )
    assert code != 0
    assert "at least 12 characters" in output

    viewer = f"{login}v"
    code, output = await imagebot_admin(
        backend_database_url, "create-user", viewer, password=password
    )
    assert code == 0, output
    assert "otpauth" not in output  # no second factor below admin
    assert (await sign_in(running, viewer, password))[0] == 201
    code, output = await imagebot_admin(
        backend_database_url, "reset-password", viewer, password=password + "!"
    )
    assert code == 0, output
    assert (await sign_in(running, viewer, password))[0] == 401
    assert (await sign_in(running, viewer, password + "!"))[0] == 201


async def test_an_admin_signs_in_with_a_code_good_once(running: Running) -> None:
    assert (await sign_in(running, OPERATOR, PASSWORD))[0] == 401  # no code
    assert (
        await sign_in(
            running, OPERATOR, PASSWORD, "000000" if totp_code() != "000000" else "111111"
        )
    )[0] == 401
    assert (await sign_in(running, OPERATOR, "not the password", totp_code()))[0] == 401
    code = totp_code()
    status, body = await sign_in(running, OPERATOR, PASSWORD, code)
    assert status == 201, body
    assert (body["operator"], body["role"]) == (OPERATOR, "admin")
    status, replayed = await sign_in(running, OPERATOR, PASSWORD, code)  # the same code again
    assert status == 401, replayed
    assert await status_with(running, body["token"], "GET", "/api/v1/audit") == 200
    status, body = await sign_in(running, VIEWER, PASSWORD)  # below admin: a password
    assert (status, body["role"]) == (201, "viewer")


async def test_sessions_are_listed_and_a_revoked_one_is_out_at_once(running: Running) -> None:
    (status, first), (_, second) = [await sign_in(running, VIEWER, PASSWORD) for _ in range(2)]
    assert status == 201

    async with (
        running.client(signed_in=False) as client,
        client.get("/api/v1/sessions", headers={"Authorization": bearer(first["token"])}) as mine,
    ):
        listed = await mine.json()
    assert {item["operator"] for item in listed["items"]} == {VIEWER}  # only one's own
    ids = {item["id"]: item["current"] for item in listed["items"]}
    assert ids[first["session_id"]] is True
    assert ids[second["session_id"]] is False
    assert "token" not in listed["items"][0]

    alices = (await list_sessions(running, OPERATOR, operator=OPERATOR))["items"]
    assert alices, "the harness's session"
    path = f"/api/v1/sessions/{alices[0]['id']}"
    assert await status_with(running, first["token"], "DELETE", path) == 404  # not theirs

    everyone = await list_sessions(running, OPERATOR)
    assert {first["session_id"], second["session_id"]} <= {i["id"] for i in everyone["items"]}
    async with (
        running.client(login=OPERATOR) as client,
        client.delete(f"/api/v1/sessions/{first['session_id']}") as response,
    ):
        assert response.status == 204
    assert await status_with(running, first["token"], "GET", "/api/v1/me") == 401  # at once
    assert await status_with(running, second["token"], "GET", "/api/v1/me") == 200
    path = f"/api/v1/sessions/{second['session_id']}"
    assert await status_with(running, second["token"], "DELETE", path) == 204  # signing out
    assert await status_with(running, second["token"], "GET", "/api/v1/me") == 401


async def list_sessions(running: Running, login: str, **params: str) -> Any:
    async with (
        running.client(login=login) as client,
        client.get("/api/v1/sessions", params=params) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def open_account(engine: AsyncEngine) -> tuple[int, int, int]:
    telegram_id = new_telegram_id()
    async with UnitOfWork(engine, BILLING, source="test") as uow:
        account = await services.ensure_account(uow, telegram_id, "approvals", 60)
    return account.user_id, telegram_id, int(account.balance)


async def post(running: Running, login: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with running.client(login=login) as client, client.post(path, **kwargs) as response:
        return response.status, await response.json()


async def test_a_large_grant_waits_for_a_second_operator_and_is_sent_once(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, telegram_id, balance = await open_account(backend_engine)
    key = uuid.uuid4()
    body = {"telegram_id": telegram_id, "credits": 5000, "reason": "a wholesale customer"}
    adjust = {"json": body, "headers": {"Idempotency-Key": str(key)}}
    status, held = await post(running, SUPPORT, "/api/v1/credit-adjustments", **adjust)
    assert (status, held["status"]) == (202, "awaiting_approval"), held
    assert (await post(running, SUPPORT, "/api/v1/credit-adjustments", **adjust))[0] == 202

    async with running.client(login=SUPPORT) as client, client.get("/api/v1/approvals") as response:
        assert str(key) in {item["request_id"] for item in (await response.json())["items"]}
    approve = f"/api/v1/approvals/{key}/approve"
    assert (await post(running, SUPPORT, approve))[0] == 403  # not the requester
    assert (await post(running, VIEWER, approve))[0] == 403  # not a viewer
    await asyncio.sleep(0.5)
    assert await user_balance(backend_engine, user_id) == balance  # nothing sent yet

    (first, one), (second, other) = await asyncio.gather(
        post(running, OPERATOR, approve), post(running, OPERATOR, approve)
    )
    assert sorted([first, second]) == [200, 409], (one, other)
    applied = one if first == 200 else other
    assert (applied["status"], applied["approver"]) == ("applied", OPERATOR), applied
    assert (await post(running, OPERATOR, approve))[0] == 409
    assert await user_balance(backend_engine, user_id) == balance + 5000
    entries = await scalar(
        backend_engine,
        "SELECT count(*) FROM billing_ledger WHERE user_id = :u AND kind = 'adjustment'",
        u=user_id,
    )
    assert entries == 1  # sent once

    small = {"telegram_id": telegram_id, "credits": 10, "reason": "small goodwill"}
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    status, done = await post(
        running, SUPPORT, "/api/v1/credit-adjustments", json=small, headers=headers
    )
    assert (status, done["status"]) == (200, "applied")  # under the limit: no approval


async def test_a_held_grant_rejected_is_never_sent(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, telegram_id, balance = await open_account(backend_engine)
    key = uuid.uuid4()
    body = {"telegram_id": telegram_id, "credits": -1001, "reason": "a chargeback"}
    headers = {"Idempotency-Key": str(key)}
    status, held = await post(
        running, OPERATOR, "/api/v1/credit-adjustments", json=body, headers=headers
    )
    assert (status, held["status"]) == (202, "awaiting_approval")
    status, rejected = await post(running, SUPPORT, f"/api/v1/approvals/{key}/reject")
    assert (status, rejected["status"], rejected["approver"]) == (200, "rejected", SUPPORT)
    assert (await post(running, SUPPORT, f"/api/v1/approvals/{key}/approve"))[0] == 409
    assert (await post(running, SUPPORT, f"/api/v1/approvals/{uuid.uuid4()}/approve"))[0] == 404
    await asyncio.sleep(0.5)
    assert await user_balance(backend_engine, user_id) == balance


async def user_balance(engine: AsyncEngine, user_id: int) -> int:
    return int(await scalar(engine, "SELECT balance FROM users WHERE user_id = :u", u=user_id))


async def test_a_large_refund_waits_for_a_second_operator(
    running: Running, backend_engine: AsyncEngine
) -> None:
    user_id, _ = await open_billing_account(backend_engine, balance=0, welcome=0)
    payment_id, _ = await topup(running, backend_engine, user_id, kopecks=2_000_000)  # 20k RUB
    assert await user_balance(backend_engine, user_id) == 20_000
    key = uuid.uuid4()
    refund = {"json": {"reason": "a chargeback threat"}, "headers": {"Idempotency-Key": str(key)}}
    path = f"/api/v1/payments/{payment_id}/refund"
    status, held = await post(running, SUPPORT, path, **refund)  # whole: 20,000 RUB > 10,000
    assert (status, held["status"]) == (202, "awaiting_approval"), held
    await asyncio.sleep(0.5)
    assert await user_balance(backend_engine, user_id) == 20_000

    status, applied = await post(running, OPERATOR, f"/api/v1/approvals/{key}/approve")
    assert (status, applied["status"], applied["approver"]) == (200, "applied", OPERATOR), applied
    assert applied["outcome"]["outcome"] == "refunded"
    assert await user_balance(backend_engine, user_id) == 0

    small, _ = await topup(running, backend_engine, user_id, kopecks=10_000)
    part = {
        "json": {"amount": 5000, "reason": "half"},
        "headers": {"Idempotency-Key": str(uuid.uuid4())},
    }
    status, done = await post(running, SUPPORT, f"/api/v1/payments/{small}/refund", **part)
    assert (status, done["status"]) == (200, "applied"), done  # under the limit: sent at once
