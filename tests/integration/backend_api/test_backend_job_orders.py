"""An operator cancels or retries a user's job through the API, against the real jobs, billing and
the bot: a canceled job ends canceled once, what was charged goes back, the user is told in the
chat; a failed job retried runs again once as a new job at no charge, the user told and given the
result; a finished (or, for a retry, not failed) or unknown job is refused, and only support and
admins may."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.events import JobAttemptFailed, JobCompleted, JobStarted
from jobs.models import Job
from support.backend_gateway import bot
from support.backend_harness import SUPPORT, VIEWER, Running
from support.billing_harness import new_telegram_id
from support.gateway_harness import Chat, Stack, image_bytes, new_user
from support.messaging import publisher_for

pytestmark = pytest.mark.integration


async def call(
    running: Running,
    method: str,
    path: str,
    *,
    key: uuid.UUID | None = None,
    login: str | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    headers = {"Idempotency-Key": str(key or uuid.uuid4())}
    client = running.client(login=login) if login else running.client()
    async with client, client.request(method, path, headers=headers, **kwargs) as response:
        return response.status, await response.json()


def credits(value: object) -> Decimal:
    """A balance or amount as the API writes it (a number, or an exact decimal string)."""
    return Decimal(str(value))


async def eventually_get(running: Running, path: str, done: Any, **params: Any) -> Any:
    for _ in range(200):
        code, body = await call(running, "GET", path, params=params)
        assert code == 200, body
        if done(body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never became as expected: {body}")


async def a_paid_job(running: Running) -> tuple[Chat, int, int]:
    """A user asks the bot for a preset of 30 credits and it is paid: (chat, user id, job id)."""
    assert running.bot is not None
    category = f"Отмена {uuid.uuid4().hex[:6]}"
    body = {"category": category, "name": "Сепия", "prompt": "sepia", "price": 30, "reason": "t"}
    code, answer = await call(running, "POST", "/api/v1/presets", json=body)
    assert (code, answer["status"]) == (200, "applied"), answer
    chat = Chat(cast("Stack", running.bot), new_user("ru"))
    chat.say("/start")
    await chat.expect("Ваш баланс: 60")
    chat.photo(image_bytes())
    chat.press(await chat.expect("Фото получено"), category)
    chat.press(await chat.expect(f"{category}: выберите пресет"), "Сепия")
    chat.press(await chat.expect("Стоимость: 30 кредитов"), "Запустить")
    users = await eventually_get(
        running, "/api/v1/users", lambda page: page["total"] == 1, telegram_id=chat.user.id
    )
    user_id = users["items"][0]["user_id"]
    jobs = await eventually_get(
        running,
        "/api/v1/jobs",
        lambda page: page["total"] == 1 and page["items"][0]["status"] != "awaiting_payment",
        user_id=user_id,
    )
    profile = await eventually_get(
        running, f"/api/v1/users/{user_id}", lambda p: credits(p["account"]["balance"]) == 30
    )
    assert credits(profile["account"]["balance"]) == 30
    return chat, user_id, jobs["items"][0]["job_id"]


async def test_a_canceled_job_is_refunded_and_its_user_told(running: Running) -> None:
    chat, user_id, job_id = await a_paid_job(running)
    key = uuid.uuid4()
    path = f"/api/v1/jobs/{job_id}/cancel"
    code, answer = await call(running, "POST", path, key=key, json={"reason": "stuck render"})
    assert code == 200, answer
    assert (answer["status"], answer["action"], answer["target"]) == (
        "applied",
        "job.cancel",
        str(job_id),
    )
    await chat.expect("«Сепия»: отменено")
    profile = await eventually_get(
        running, f"/api/v1/users/{user_id}", lambda p: credits(p["account"]["balance"]) == 60
    )
    (job,) = profile["jobs"]["items"]
    assert job["status"] == "canceled"
    assert "stuck render" in job["error"]
    refunds = [entry for entry in profile["ledger"]["items"] if entry["kind"] == "refund"]
    assert [credits(entry["amount"]) for entry in refunds] == [30]

    code, again = await call(running, "POST", path, key=key, json={"reason": "stuck render"})
    assert (code, again["status"], again["outcome"]) == (200, "applied", answer["outcome"])
    code, conflict = await call(running, "POST", path, key=key, json={"reason": "other"})
    assert code == 409, conflict
    code, late = await call(running, "POST", path, json={"reason": "once more"})
    assert (code, late["status"], late["outcome"]["reason"]) == (200, "refused", "finished")
    profile = await eventually_get(running, f"/api/v1/users/{user_id}", lambda p: True)
    assert credits(profile["account"]["balance"]) == 60  # refunded once


async def test_unknown_jobs_roles_and_reasons(running: Running) -> None:
    code, unknown = await call(
        running, "POST", "/api/v1/jobs/2147483000/cancel", json={"reason": "typo"}
    )
    assert (code, unknown["status"], unknown["outcome"]["reason"]) == (
        200,
        "refused",
        "unknown_job",
    )
    code, _ = await call(running, "POST", "/api/v1/jobs/1/cancel", json={"reason": " "})
    assert code == 422
    code, _ = await call(running, "POST", "/api/v1/jobs/1/cancel", json={})
    assert code == 422
    code, _ = await call(
        running, "POST", "/api/v1/jobs/1/cancel", login=VIEWER, json={"reason": "no"}
    )
    assert code == 403
    code, answer = await call(
        running, "POST", "/api/v1/jobs/2147483001/cancel", login=SUPPORT, json={"reason": "x"}
    )
    assert (code, answer["operator"]) == (200, SUPPORT)


async def play_runner(
    running: Running, *events: JobStarted | JobCompleted | JobAttemptFailed
) -> None:
    """The GPU runner's reports, published on the API's broker."""
    runtime = running.backend.runtime
    publisher = publisher_for(runtime.broker, runtime.topology)
    for event in events:
        await publisher.publish(event)


async def test_a_failed_job_is_retried_once_as_a_new_job_at_no_charge(
    running: Running, tmp_path: Path
) -> None:
    chat, user_id, job_id = await a_paid_job(running)
    failure = JobAttemptFailed(job_id=job_id, attempt=1, retryable=False, reason="oom")
    await play_runner(running, failure)
    await chat.expect("«Сепия»: не удалось сделать изображение. 30 кредитов вернутся")
    await eventually_get(
        running, f"/api/v1/users/{user_id}", lambda p: credits(p["account"]["balance"]) == 60
    )

    key = uuid.uuid4()
    path = f"/api/v1/jobs/{job_id}/retry"
    code, answer = await call(running, "POST", path, key=key, json={"reason": "runner fixed"})
    assert code == 200, answer
    assert (answer["status"], answer["action"], answer["target"]) == (
        "applied",
        "job.retry",
        str(job_id),
    )
    new_job_id = answer["outcome"]["new_job_id"]
    assert answer["outcome"]["job_id"] == job_id
    assert new_job_id != job_id
    await chat.expect("«Сепия»: поддержка перезапустила ваш неудавшийся запрос, бесплатно")
    status = await chat.expect("«Сепия»: в очереди", method="sendMessage")

    jobs = await eventually_get(
        running,
        "/api/v1/jobs",
        lambda page: page["total"] == 2 and page["items"][0]["status"] == "dispatched",
        user_id=user_id,
    )
    retried, failed = jobs["items"]
    assert (retried["job_id"], failed["job_id"], failed["status"]) == (new_job_id, job_id, "failed")
    assert retried["price"] == 0
    for same in ("prompt", "preset_id", "workflow_type"):
        assert retried[same] == failed[same], same

    code, again = await call(running, "POST", path, key=key, json={"reason": "runner fixed"})
    assert (code, again["status"], again["outcome"]) == (200, "applied", answer["outcome"])
    code, conflict = await call(running, "POST", path, key=key, json={"reason": "other"})
    assert code == 409, conflict
    code, running_one = await call(
        running, "POST", f"/api/v1/jobs/{new_job_id}/retry", json={"reason": "twice"}
    )
    assert (code, running_one["status"], running_one["outcome"]) == (
        200,
        "refused",
        {"job_id": new_job_id, "reason": "not_failed", "stage": "dispatched"},
    )

    result = tmp_path / "results" / f"{new_job_id}.png"  # the bot's object store
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_bytes(image_bytes((32, 32), "PNG"))
    await play_runner(
        running,
        JobStarted(job_id=new_job_id, attempt=1, runner_id="runner-test", total_steps=2),
        JobCompleted(
            job_id=new_job_id,
            attempt=1,
            result_key=f"results/{new_job_id}.png",
            duration_ms=900,
            seed=1,
        ),
    )
    await chat.expect("«Сепия» готово", method="sendPhoto")
    assert status.message_id is not None
    await bot(running).telegram.shown_eventually(chat.user.id, status.message_id, "«Сепия»: готово")
    profile = await eventually_get(
        running,
        f"/api/v1/users/{user_id}",
        lambda p: p["jobs"]["items"][0]["status"] == "completed",
    )
    assert credits(profile["account"]["balance"]) == 60  # the retry cost nothing
    debits = {
        e["job_id"]: credits(e["amount"])
        for e in profile["ledger"]["items"]
        if e["kind"] == "debit"
    }
    assert debits == {job_id: -30, new_job_id: 0}
    refunds = [entry for entry in profile["ledger"]["items"] if entry["kind"] == "refund"]
    assert [(e["job_id"], credits(e["amount"])) for e in refunds] == [(job_id, 30)]
    jobs = await eventually_get(running, "/api/v1/jobs", lambda page: True, user_id=user_id)
    assert jobs["total"] == 2  # the same key twice made one job


async def failed_unpaid(engine: AsyncEngine, user_id: int) -> int:
    """A job of `user_id` that failed before billing debited it (as DebitRejected fails one)."""
    async with engine.begin() as connection:
        job = insert(Job).values(
            user_id=user_id,
            telegram_id=new_telegram_id(),
            prompt="a cat",
            workflow_type="qwen_image",
            price=30,
            request_id=uuid.uuid4(),
            stage="failed",
        )
        return int((await connection.execute(job.returning(Job.id))).scalar_one())


async def test_a_retry_of_a_job_that_did_not_fail_or_was_never_paid_is_refused(
    running: Running, backend_engine: AsyncEngine
) -> None:
    _, user_id, job_id = await a_paid_job(running)
    code, answer = await call(
        running, "POST", f"/api/v1/jobs/{job_id}/cancel", json={"reason": "by mail"}
    )
    assert (code, answer["status"]) == (200, "applied"), answer
    code, canceled = await call(
        running, "POST", f"/api/v1/jobs/{job_id}/retry", json={"reason": "try it"}
    )
    assert (code, canceled["status"], canceled["outcome"]["reason"]) == (
        200,
        "refused",
        "not_failed",
    )
    assert canceled["outcome"]["stage"] == "canceled"
    code, unknown = await call(
        running, "POST", "/api/v1/jobs/2147483002/retry", json={"reason": "typo"}
    )
    assert (code, unknown["status"], unknown["outcome"]["reason"]) == (
        200,
        "refused",
        "unknown_job",
    )
    unpaid = await failed_unpaid(backend_engine, user_id)  # no credits: billing took nothing
    code, answer = await call(
        running, "POST", f"/api/v1/jobs/{unpaid}/retry", json={"reason": "a gift?"}
    )
    assert (code, answer["status"], answer["outcome"]["reason"]) == (200, "refused", "never_paid")
    code, _ = await call(running, "POST", f"/api/v1/jobs/{job_id}/retry", json={"reason": " "})
    assert code == 422
    code, _ = await call(
        running, "POST", f"/api/v1/jobs/{job_id}/retry", login=VIEWER, json={"reason": "no"}
    )
    assert code == 403
    jobs = await eventually_get(running, "/api/v1/jobs", lambda page: True, user_id=user_id)
    assert jobs["total"] == 2  # nothing was made: the paid job and the unpaid one
