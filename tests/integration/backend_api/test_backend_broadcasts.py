"""Broadcasts end to end: the audience counted by the gateway, a broadcast queued once by it in
the sender's lowest lane and delivered to the fake Telegram, its progress (sent, failed for
good, left), a cancel that drops what is left, and every write in the audit log."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot_gateway.limits import Lane
from bot_gateway.models import OutboundMessage
from contracts.events import BroadcastCancelRequested
from support.backend_gateway import bot, far_future, seed_user
from support.backend_harness import SUPPORT, VIEWER, Running

pytestmark = pytest.mark.integration


async def call(
    running: Running,
    method: str,
    path: str,
    *,
    login: str | None = None,
    key: uuid.UUID | None = None,
    **options: Any,
) -> tuple[int, Any]:
    headers = {"Idempotency-Key": str(key)} if key else {}
    client = running.client(login=login) if login else running.client()
    async with client, client.request(method, path, headers=headers, **options) as response:
        return response.status, await response.json()


async def audience(running: Running, **params: Any) -> int:
    status, body = await call(running, "GET", "/api/v1/broadcasts/audience", params=params)
    assert status == 200, body
    return int(body["recipients"])


async def progress(running: Running, broadcast_id: uuid.UUID, **expected: int) -> Any:
    """The broadcast's view once its progress is `expected` (the sender works meanwhile)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        status, view = await call(running, "GET", f"/api/v1/broadcasts/{broadcast_id}")
        assert status == 200, view
        if all(view[name] == value for name, value in expected.items()):
            return view
        assert asyncio.get_running_loop().time() < deadline, (expected, view)
        await asyncio.sleep(0.1)


async def outbound(engine: AsyncEngine, broadcast_id: uuid.UUID) -> list[Any]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(OutboundMessage.chat_id, OutboundMessage.lane, OutboundMessage.sent_at).where(
                OutboundMessage.key.like(f"broadcast:{broadcast_id.hex}:%")
            )
        )
        return list(rows)


async def test_a_broadcast_reaches_its_audience_once_in_the_lowest_lane(
    running: Running, backend_engine: AsyncEngine
) -> None:
    since = far_future()
    ru_paid = await seed_user(backend_engine, joined=since, paid=True)
    en_paid = await seed_user(backend_engine, language="en", joined=since, paid=True)
    ru_new = await seed_user(backend_engine, joined=since + timedelta(days=1))
    ru_blocked = await seed_user(backend_engine, joined=since, blocked=True, paid=True)
    ru_back = await seed_user(
        backend_engine, joined=since - timedelta(days=400), asked_at=since + timedelta(hours=1)
    )
    ru_idle = await seed_user(backend_engine, joined=since - timedelta(days=400), paid=True)
    ru_gone = await seed_user(backend_engine, joined=since)  # blocks the bot at Telegram
    bot(running).telegram.blocked_by.add(ru_gone)
    moment = since.isoformat().replace("+00:00", "Z")

    assert await audience(running, active_since=moment) == 5
    assert await audience(running, active_since=moment, languages="ru") == 4
    assert await audience(running, active_since=moment, paid_ever="true") == 2
    assert await audience(running, active_since=moment, paid_ever="false") == 3
    assert await audience(running, active_since=moment, languages="en", paid_ever="true") == 1
    assert await audience(running, active_since=moment, languages=["ru", "en"]) == 5
    assert await audience(running) >= 6  # every user who has not blocked the bot

    key = uuid.uuid4()
    text = f"Новые пресеты! {key.hex[:6]}"
    body = {
        "text": text,
        "audience": {"languages": ["ru"], "active_since": moment},
        "reason": "the winter campaign",
    }
    status, sent = await call(running, "POST", "/api/v1/broadcasts", key=key, json=body)
    assert status == 200, sent
    assert sent["status"] == "applied"
    assert sent["action"] == "broadcast.send"
    assert sent["outcome"] == {"recipients": 4}
    assert sent["target"] == str(key)

    telegram = bot(running).telegram
    for chat in (ru_paid, ru_new, ru_back):
        await telegram.wait_for(chat, text, method="sendMessage")
    view = await progress(running, key, sent=3, failed=1, left=0)
    assert view["recipients"] == 4
    assert view["dropped"] == 0
    assert view["canceled_at"] is None
    assert view["audience"]["languages"] == ["ru"]
    assert view["operator"] == "alice"
    for chat in (en_paid, ru_blocked, ru_idle, ru_gone):
        assert not [c for c in telegram.sent_to(chat) if text in c.text]

    rows = await outbound(backend_engine, key)
    assert len(rows) == 4
    assert {row.lane for row in rows} == {int(Lane.bulk)}
    assert Lane.bulk == max(Lane)  # behind replies and job messages

    status, again = await call(running, "POST", "/api/v1/broadcasts", key=key, json=body)
    assert (status, again["outcome"]) == (200, {"recipients": 4})
    assert len(await outbound(backend_engine, key)) == 4  # applied once
    other = {**body, "text": "something else"}
    status, _ = await call(running, "POST", "/api/v1/broadcasts", key=key, json=other)
    assert status == 409

    status, page = await call(running, "GET", "/api/v1/broadcasts", login=VIEWER)
    assert status == 200
    assert str(key) in [one["broadcast_id"] for one in page["items"]]
    status, audit = await call(
        running, "GET", "/api/v1/audit", params={"action": "broadcast.send", "target": str(key)}
    )
    assert status == 200
    assert [entry["reason"] for entry in audit["items"]] == ["the winter campaign"]


async def test_a_cancel_drops_the_messages_not_sent_yet(
    running: Running, backend_engine: AsyncEngine
) -> None:
    since = far_future()
    chats = [await seed_user(backend_engine, joined=since) for _ in range(3)]
    sender = bot(running).gateway.sender
    await sender.stop()  # nothing goes out until the cancel is through
    try:
        key = uuid.uuid4()
        body = {
            "text": f"Скидка {key.hex[:6]}",
            "audience": {"active_since": since.isoformat().replace("+00:00", "Z")},
            "reason": "a sale",
        }
        status, sent = await call(running, "POST", "/api/v1/broadcasts", key=key, json=body)
        assert (status, sent["outcome"]) == (200, {"recipients": 3}), sent
        await progress(running, key, sent=0, left=3)

        cancel_key = uuid.uuid4()
        status, canceled = await call(
            running,
            "POST",
            f"/api/v1/broadcasts/{key}/cancel",
            key=cancel_key,
            json={"reason": "wrong discount"},
        )
        assert status == 200, canceled
        assert canceled["status"] == "applied"
        assert canceled["outcome"] == {"dropped": 3}
        assert canceled["target"] == str(key)
        view = await progress(running, key, left=0, dropped=3)
        assert view["sent"] == 0
        assert view["canceled_at"] is not None
        status, again = await call(
            running,
            "POST",
            f"/api/v1/broadcasts/{key}/cancel",
            key=cancel_key,
            json={"reason": "wrong discount"},
        )
        assert (status, again["outcome"]) == (200, {"dropped": 3})
    finally:
        sender.start()
    await asyncio.sleep(1.0)  # the sender runs again: nothing of the broadcast is left to go
    telegram = bot(running).telegram
    for chat in chats:
        assert not telegram.sent_to(chat)
    assert await outbound(backend_engine, key) == []


async def test_the_gateway_refuses_to_cancel_a_broadcast_it_does_not_know(
    running: Running,
) -> None:
    unknown = uuid.uuid4()
    status, _ = await call(
        running,
        "POST",
        f"/api/v1/broadcasts/{unknown}/cancel",
        key=uuid.uuid4(),
        json={"reason": "no such"},
    )
    assert status == 404  # the API asks the gateway first
    key = uuid.uuid4()  # a cancel that reaches the gateway anyway (a race with nothing)
    record = await running.backend.commands.submit(
        key,
        "alice",
        "broadcast.cancel",
        str(unknown),
        {"broadcast_id": str(unknown)},
        "no such",
        BroadcastCancelRequested(
            request_id=key, operator="alice", broadcast_id=unknown, reason="no such"
        ),
    )
    assert record.status == "refused"
    assert record.outcome == {"reason": "unknown_broadcast"}


async def test_only_admins_send_and_every_write_needs_its_key_and_reason(
    running: Running,
) -> None:
    body = {"text": "hi", "reason": "test"}
    for login in (SUPPORT, VIEWER):
        status, _ = await call(
            running, "POST", "/api/v1/broadcasts", login=login, key=uuid.uuid4(), json=body
        )
        assert status == 403, login
    status, _ = await call(running, "POST", "/api/v1/broadcasts", json=body)
    assert status == 422  # no idempotency key
    for wrong in (
        {"text": "hi"},
        {"text": " ", "reason": "test"},
        {"text": "x" * 4097, "reason": "test"},
        {**body, "audience": {"languages": ["de"]}},
        {**body, "audience": {"active_since": "yesterday"}},
    ):
        status, _ = await call(running, "POST", "/api/v1/broadcasts", key=uuid.uuid4(), json=wrong)
        assert status == 422, wrong
    async with running.client(signed_in=False) as client:
        for path in ("/api/v1/broadcasts", "/api/v1/broadcasts/audience"):
            async with client.get(path) as response:
                assert response.status == 401
