"""The counters and histograms the dashboard and the alerts read are moved where the thing
happens: webhook answers, Telegram's 429s, the ETA each dispatched job is told."""

from __future__ import annotations

import uuid
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendMessage
from prometheus_client import REGISTRY

from billing.settings import WebhookSettings
from billing.webhook import YooKassaWebhook
from bot_gateway.rate_limited import RateLimitedRequests
from bot_gateway.webhook import TelegramWebhook
from contracts.envelope import Event, RawEnvelope
from contracts.events import JobQueued
from jobs.dispatcher import Dispatcher as JobsDispatcher
from jobs.repository import Dispatched
from jobs.settings import JobsSettings


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def call(app: Any, scope: dict[str, Any], body: bytes = b"{}") -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "headers": [], **scope}, receive, send)
    return int(sent[0]["status"])


async def test_webhook_answers_are_counted_by_webhook_and_status() -> None:
    bot = Bot("42:unit-test-token")
    telegram = TelegramWebhook(Dispatcher(), bot, "secret")
    before = value("imagebot_webhook_responses_total", webhook="telegram", status="401")
    assert await call(telegram, {"method": "POST"}) == 401
    assert await call(telegram, {"method": "POST"}) == 401
    after = value("imagebot_webhook_responses_total", webhook="telegram", status="401")
    assert after - before == 2
    await bot.session.close()

    yookassa = YooKassaWebhook(
        WebhookSettings(allowed_networks="10.0.0.0/8"),
        provider=None,  # type: ignore[arg-type]  # a refused sender reaches neither
        unit_of_work=None,  # type: ignore[arg-type]
    )
    before = value("imagebot_webhook_responses_total", webhook="yookassa", status="403")
    assert await call(yookassa, {"method": "POST", "client": ("192.0.2.1", 1)}) == 403
    after = value("imagebot_webhook_responses_total", webhook="yookassa", status="403")
    assert after - before == 1


class NoLimits:
    """The limiter's two calls the middleware makes, without any waiting."""

    async def acquire(self, chat_id: int | None) -> None:
        return None

    def pause(self, chat_id: int | None, seconds: float) -> None:
        return None


async def test_every_429_is_counted_by_method() -> None:
    middleware = RateLimitedRequests(NoLimits(), retry_after_tries=1)  # type: ignore[arg-type]
    bot = Bot("42:unit-test-token")
    method = SendMessage(chat_id=11, text="hi")

    async def always_429(bot: Bot, method: Any) -> Any:
        raise TelegramRetryAfter(method=method, message="Too Many Requests", retry_after=0)

    before = value("imagebot_telegram_retry_after_total", method="sendMessage")
    try:
        await middleware(always_429, bot, method)  # type: ignore[arg-type]
    except TelegramRetryAfter:
        pass
    else:
        raise AssertionError("the last 429 must reach the caller")
    assert value("imagebot_telegram_retry_after_total", method="sendMessage") - before == 2
    await bot.session.close()


class Emitted:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event, *, correlation_id: str | None = None) -> RawEnvelope:
        self.events.append(event)
        return None  # type: ignore[return-value]  # the dispatcher does not read it


async def test_the_eta_each_dispatched_job_is_told_is_observed_per_workflow() -> None:
    settings = JobsSettings(default_duration_s=40)
    job = Dispatched(
        id=1, user_id=2, chat_id=3, request_id=uuid.uuid4(), retry_count=0,
        workflow_type="qwen_image", prompt="a cat", image_path=None, extra_image_paths=None,
        seed=None,
        position=3, busy_runners=1, recent_durations_ms=[],
    )  # fmt: skip
    emitted = Emitted()
    count = value("imagebot_jobs_eta_seconds_count", workflow="qwen_image")
    total = value("imagebot_jobs_eta_seconds_sum", workflow="qwen_image")

    JobsDispatcher(settings)._announce(emitted, job)

    queued = next(event for event in emitted.events if isinstance(event, JobQueued))
    assert queued.eta_seconds == 120
    assert value("imagebot_jobs_eta_seconds_count", workflow="qwen_image") - count == 1
    assert value("imagebot_jobs_eta_seconds_sum", workflow="qwen_image") - total == 120
