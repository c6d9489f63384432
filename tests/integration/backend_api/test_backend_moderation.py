"""Moderation through the operators' API against the real services: a held request's photo is
shown; approved (by support), the gateway requests the job at the price the user was shown and
billing debits it; rejected, the user is told and nothing moves; a second decision is refused;
a ban makes the bot refuse the user politely, an unban lifts it, an unban of nobody is refused;
the user's standing, decisions and farming signals; every write in the audit log, once per
idempotency key, and no viewer decides."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncEngine

from support.backend_harness import OPERATOR, SUPPORT, VIEWER, Running
from support.billing_harness import new_telegram_id, scalar
from support.held_requests import hold_request

pytestmark = pytest.mark.integration


async def get(running: Running, path: str, login: str = VIEWER, **params: Any) -> Any:
    async with (
        running.client(login=login) as client,
        client.get(path, params=params) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def post(
    running: Running, path: str, key: uuid.UUID | None, body: dict[str, Any], login: str = SUPPORT
) -> tuple[int, dict[str, Any]]:
    headers = {"Idempotency-Key": str(key)} if key else {}
    async with (
        running.client(login=login) as client,
        client.post(path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def until(check: Any, timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_held_request_is_shown_then_approved_once_and_its_job_is_debited(
    running: Running, backend_engine: AsyncEngine, tmp_path: Path
) -> None:
    assert running.bot is not None
    held = await hold_request(running.bot.gateway, tmp_path, backend_engine)
    page = await get(running, "/api/v1/moderation/queue", telegram_id=held.user.id)
    (item,) = page["items"]
    assert (item["item_id"], item["state"], item["price"], item["images"]) == (
        held.item_id,
        "held",
        held.price,
        1,
    )
    assert (item["category"], item["scores"]) == ("face_male", {"FACE_MALE": 0.61})
    async with (
        running.client(login=VIEWER) as client,
        client.get(f"/api/v1/moderation/queue/{held.item_id}/photos/0") as response,
    ):
        assert (response.status, response.content_type) == (200, "image/jpeg")
        preview = Image.open(io.BytesIO(await response.read()))
    assert preview.size == (640, 480)  # the 800x600 upload, downscaled for the operator
    async with (
        running.client(login=VIEWER) as client,
        client.get(f"/api/v1/moderation/queue/{held.item_id}/photos/1") as response,
    ):
        assert response.status == 404  # it has one photo

    path = f"/api/v1/moderation/queue/{held.item_id}/decision"
    body = {"verdict": "approve", "reason": "a plain portrait"}
    code, _ = await post(running, path, uuid.uuid4(), body, login=VIEWER)
    assert code == 403
    code, missing = await post(running, path, None, body)
    assert code == 422, missing
    key = uuid.uuid4()
    code, applied = await post(running, path, key, body)
    assert code == 200, applied
    assert (applied["status"], applied["action"], applied["operator"]) == (
        "applied",
        "moderation.approve",
        SUPPORT,
    )
    assert applied["outcome"]["verdict"] == "approved"
    code, again = await post(running, path, key, body)  # a retry: applied once
    assert (code, again["status"]) == (200, "applied")

    request_id = applied["outcome"]["job_request_id"]

    async def job_made() -> bool:
        found = await scalar(
            backend_engine, "SELECT count(*) FROM jobs WHERE request_id = :r", r=request_id
        )
        return bool(found == 1)

    await until(job_made)

    async def debited() -> bool:
        balance = await scalar(
            backend_engine, "SELECT balance FROM users WHERE user_id = :u", u=held.user_id
        )
        return bool(balance == 60 - held.price)

    await until(debited)
    code, late = await post(
        running, path, uuid.uuid4(), {"verdict": "reject", "reason": "second thoughts"}
    )
    assert (code, late["status"], late["outcome"]) == (
        200,
        "refused",
        {"reason": "already_decided", "state": "approved"},
    )
    decided = await get(
        running, "/api/v1/moderation/queue", state="approved", telegram_id=held.user.id
    )
    assert [(i["decided_by"], i["reason"]) for i in decided["items"]] == [
        (SUPPORT, "a plain portrait")
    ]
    audit = await get(running, "/api/v1/audit", login=OPERATOR, target=f"held:{held.item_id}")
    assert [(r["action"], r["status"]) for r in audit["items"]] == [
        ("moderation.reject", "refused"),
        ("moderation.approve", "applied"),
    ]


async def test_a_rejected_request_is_told_to_the_user_and_costs_nothing(
    running: Running, backend_engine: AsyncEngine, tmp_path: Path
) -> None:
    assert running.bot is not None
    held = await hold_request(running.bot.gateway, tmp_path, backend_engine)
    path = f"/api/v1/moderation/queue/{held.item_id}/decision"
    code, rejected = await post(
        running, path, uuid.uuid4(), {"verdict": "reject", "reason": "not a portrait"}
    )
    assert (code, rejected["status"], rejected["outcome"]["verdict"]) == (
        200,
        "applied",
        "rejected",
    )
    telegram = running.bot.telegram

    async def told() -> bool:
        return any(
            call.chat_id == held.user.id and "a moderator checked your photo" in call.text
            for call in telegram.calls
        )

    await until(told)
    balance = await scalar(
        backend_engine, "SELECT balance FROM users WHERE user_id = :u", u=held.user_id
    )
    assert balance == 60
    jobs = await scalar(
        backend_engine, "SELECT count(*) FROM jobs WHERE user_id = :u", u=held.user_id
    )
    assert jobs == 0
    code, unknown = await post(
        running,
        "/api/v1/moderation/queue/999999999/decision",
        uuid.uuid4(),
        {"verdict": "approve", "reason": "typo"},
    )
    assert (code, unknown["status"], unknown["outcome"]["reason"]) == (
        200,
        "refused",
        "unknown_item",
    )


async def test_a_ban_is_applied_by_the_gateway_and_the_bot_refuses_politely(
    running: Running, backend_engine: AsyncEngine, tmp_path: Path
) -> None:
    assert running.bot is not None
    held = await hold_request(running.bot.gateway, tmp_path, backend_engine)
    telegram_id = held.user.id
    user_path = f"/api/v1/moderation/users/{telegram_id}"
    view = await get(running, user_path)
    assert (view["moderation"]["standing"], view["moderation"]["held"]) == ("ok", 1)
    assert [(d["decision"], d["actor"]) for d in view["moderation"]["decisions"]] == [
        ("held", "moderation")
    ]
    farming = view["farming"]
    assert (farming["known"], farming["paid"], farming["weekly_bonus_eligible"]) == (
        True,
        False,
        True,
    )

    code, _ = await post(running, f"{user_path}/ban", uuid.uuid4(), {"reason": "x"}, login=VIEWER)
    assert code == 403
    code, banned = await post(running, f"{user_path}/ban", uuid.uuid4(), {"reason": "spam"})
    assert (code, banned["status"], banned["outcome"]) == (
        200,
        "applied",
        {"restriction": "banned"},
    )
    view = await get(running, user_path)
    assert (view["moderation"]["standing"], view["moderation"]["reason"]) == ("banned", "spam")
    assert view["moderation"]["decisions"][0]["actor"] == SUPPORT

    telegram = running.bot.telegram
    telegram.say(held.user, "/start")

    async def refused() -> bool:
        return any(
            call.chat_id == telegram_id and "The bot is closed to you: spam" in call.text
            for call in telegram.calls
        )

    await until(refused)

    code, lifted = await post(running, f"{user_path}/unban", uuid.uuid4(), {"reason": "appeal"})
    assert (code, lifted["status"], lifted["outcome"]) == (
        200,
        "applied",
        {"restriction": "unbanned"},
    )
    code, nothing = await post(running, f"{user_path}/unban", uuid.uuid4(), {"reason": "again"})
    assert (code, nothing["status"], nothing["outcome"]) == (
        200,
        "refused",
        {"reason": "not_restricted"},
    )
    assert (await get(running, user_path))["moderation"]["standing"] == "ok"
    nobody = await get(running, f"/api/v1/moderation/users/{new_telegram_id()}")
    assert (nobody["farming"]["known"], nobody["moderation"]["decisions"]) == (False, [])
    audit = await get(running, "/api/v1/audit", login=OPERATOR, target=str(telegram_id))
    assert [(r["action"], r["status"]) for r in audit["items"]] == [
        ("user.unban", "refused"),
        ("user.unban", "applied"),
        ("user.ban", "applied"),
    ]
