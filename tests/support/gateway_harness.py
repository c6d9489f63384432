"""The bot gateway's world in tests: billing and jobs running in process, the fake Telegram
Bot API, the fake YooKassa, and the test playing the GPU runner through events."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from billing.app import Billing
from bot_gateway.app import Gateway, Settings
from bot_gateway.settings import (
    ConversationSettings,
    DeliverySettings,
    TelegramSettings,
)
from contracts.events import (
    AnyJobDispatched,
    JobCompleted,
    JobDispatched,
    JobDispatchedV1,
    JobProgress,
    JobStarted,
)
from contracts.topology import Topology
from messaging.publisher import EventPublisher
from messaging.settings import BrokerSettings, DatabaseSettings, OutboxSettings, ServiceSettings
from moderation import ModerationSettings
from moderation.settings import NUDITY_HOLD_THRESHOLDS, NUDITY_THRESHOLDS
from object_store import StorageSettings
from sandbox.telegram import TOKEN, Call, TelegramSandbox, TgUser
from sandbox.yookassa import YooKassaSandbox
from support.jobs_harness import EventLog

ADMIN = TgUser(id=7_000_000_001, first_name="Admin", language_code="en")
MAX_TEST_PIXELS = 1_000_000
FLOOD_LIMIT = 20
"""Scripted users tap the moment an answer shows, far faster than people: a burst twice
production's keeps a long flow test (a dozen updates in a second) under the limit."""
MAX_UNFINISHED = 3
"""Jobs' cap on a user's unfinished jobs in these tests."""
FLOOD_INTERVAL_S = 0.5
"""As in production: 20 updates at once stay over the limit even when a busy machine takes
seconds to handle them (the bucket refills two a second)."""
MODERATION = ModerationSettings(
    image_thresholds=f"{NUDITY_THRESHOLDS},FACE_FEMALE=0.5",
    image_hold_thresholds=f"{NUDITY_HOLD_THRESHOLDS},FACE_MALE=0.5",
    slowdown_after=2,
    slowdown_s=3.0,
    suspend_after=3,
)
"""The real detector, with harmless labels made refusing and holding: a woman's face
(scikit-image's astronaut photo) shows an upload refused, a man's (its cameraman) one held for
an operator; the plain pictures the other tests send have none. Two refusals slow a user down
for 3 s, three suspend them."""

_ids = itertools.count(random.randrange(10**6, 2 * 10**6) * 10**4 + 2**33)


def new_user(language: str | None = "ru", name: str = "Tester") -> TgUser:
    """A Telegram user above 32 bits, unique within the run."""
    return TgUser(id=next(_ids), first_name=name, language_code=language)


def image_bytes(size: tuple[int, int] = (64, 48), kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, format=kind)
    return buffer.getvalue()


def gateway_settings(
    database_url: str,
    amqp_url: str,
    topology: Topology,
    telegram: TelegramSandbox,
    root: Path,
    **overrides: Any,
) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url, pool_size=10),  # type: ignore[arg-type]
        broker=overrides.pop(
            "broker",
            BrokerSettings(
                url=amqp_url,  # type: ignore[arg-type]
                namespace=topology.namespace,
                retry_backoff_s=0.05,
                transient_retry_s=2.0,
                rpc_timeout_s=5.0,
            ),
        ),
        outbox=OutboxSettings(poll_interval_s=0.1),
        service=ServiceSettings(graceful_timeout_s=5),
        telegram=TelegramSettings(
            bot_token=TOKEN,  # type: ignore[arg-type]
            api_url=telegram.base_url,
            admin_ids=str(ADMIN.id),
            polling_timeout_s=1,
        ),
        conversation=overrides.pop(
            "conversation",
            ConversationSettings(
                max_image_pixels=MAX_TEST_PIXELS,
                flood_messages=FLOOD_LIMIT,
                flood_interval_s=FLOOD_INTERVAL_S,
            ),
        ),
        delivery=overrides.pop(
            "delivery",
            DeliverySettings(edit_interval_s=0.3, poll_interval_s=0.05, chat_interval_s=0.05),
        ),
        storage=StorageSettings(local_root=root),
        moderation=overrides.pop("moderation", MODERATION),
    )


@dataclass
class Stack:
    """Everything a gateway test talks to."""

    telegram: TelegramSandbox
    events: EventLog
    runner_publisher: EventPublisher
    gateway: Gateway
    store_root: Path
    billing: Billing
    yookassa: YooKassaSandbox

    async def pay(self, payment_id: int) -> int:
        """The user pays payment `payment_id` (ours) and YooKassa notifies billing: its status."""
        (remote,) = [
            remote_id
            for remote_id, payment in self.yookassa.payments.items()
            if payment["metadata"]["payment_id"] == str(payment_id)
        ]
        self.yookassa.set_status(remote, "succeeded")
        body = json.dumps(self.yookassa.notification(remote)).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/webhooks/yookassa",
            "client": ("127.0.0.1", 40000),
            "headers": [(b"content-type", b"application/json")],
        }
        chunks = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def respond(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.billing.webhook(scope, receive, respond)  # type: ignore[arg-type]
        return int(sent[0]["status"])

    async def dispatches(self, job_id: int, timeout_s: float = 15.0) -> list[AnyJobDispatched]:
        """The job's dispatches so far (v1, or v2 for an album's job), once there is one."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            found: list[AnyJobDispatched] = [
                *self.events.of(JobDispatchedV1, job_id=job_id),
                *self.events.of(JobDispatched, job_id=job_id),
            ]
            if found:
                return found
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"job {job_id} was never dispatched in {timeout_s}s")
            await asyncio.sleep(0.02)

    async def run_job(
        self,
        job_id: int,
        *,
        steps: int = 3,
        step_pause_s: float = 0.05,
        size: tuple[int, int] = (32, 32),
    ) -> JobCompleted:
        """Play the GPU runner: start, report each step, store a result, complete."""
        attempt = max(d.attempt for d in await self.dispatches(job_id))
        await self.runner_publisher.publish(
            JobStarted(job_id=job_id, attempt=attempt, runner_id="runner-test", total_steps=steps)
        )
        for step in range(1, steps + 1):
            await self.runner_publisher.publish(
                JobProgress(job_id=job_id, attempt=attempt, step=step, total_steps=steps)
            )
            await asyncio.sleep(step_pause_s)
        key = f"results/{job_id}.png"
        path = self.store_root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(size, "PNG"))
        completed = JobCompleted(
            job_id=job_id, attempt=attempt, result_key=key, duration_ms=1200, seed=1
        )
        await self.runner_publisher.publish(completed)
        return completed


class Chat:
    """One user's private chat with the bot, seen from the user's side.

    `expect` looks only at what the bot did since the user's last action (or `mark`).
    """

    def __init__(self, stack: Stack, user: TgUser) -> None:
        self.stack = stack
        self.user = user
        self.telegram = stack.telegram
        self._cursor = len(self.telegram.calls)

    def mark(self) -> None:
        self._cursor = len(self.telegram.calls)

    def say(self, text: str) -> None:
        self.mark()
        self.telegram.say(self.user, text)

    def photo(self, data: bytes | None = None, **options: Any) -> None:
        self.mark()
        self.telegram.send_photo(self.user, data or image_bytes(), **options)

    def document(self, data: bytes, **options: Any) -> None:
        self.mark()
        self.telegram.send_document(self.user, data, **options)

    def press(self, call: Call, label: str) -> str:
        """Press the button whose text contains `label` under the message `call` showed."""
        assert call.message_id is not None
        return self.press_data(call.message_id, call.button(label)["callback_data"])

    def press_data(self, message_id: int, data: str) -> str:
        self.mark()
        return self.telegram.press(self.user, message_id, data)

    async def expect(
        self, contains: str, *, method: str | None = None, timeout_s: float = 15.0
    ) -> Call:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            for call in self.telegram.calls[self._cursor :]:
                if (
                    call.chat_id == self.user.id
                    and (method is None or call.method == method)
                    and contains in call.text
                ):
                    return call
            if asyncio.get_running_loop().time() > deadline:
                seen = [(c.method, c.text[:90]) for c in self.telegram.calls[self._cursor :]
                        if c.chat_id == self.user.id]  # fmt: skip
                raise AssertionError(f"{self.user.id} never got {contains!r}; got {seen}")
            await asyncio.sleep(0.02)

    async def alert(self, query_id: str) -> str:
        answer = await self.telegram.answer_to(query_id)
        return str(answer.params.get("text") or "")

    def said(self, contains: str) -> list[Call]:
        return [
            call
            for call in self.telegram.calls[self._cursor :]
            if call.chat_id == self.user.id and contains in call.text
        ]
