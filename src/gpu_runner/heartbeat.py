"""The runner's heartbeat: its status for the operators (`RunnerHeartbeat`), published every
`GPU_HEARTBEAT_INTERVAL_S` and once more as it stops. The backend API keeps the latest beat of
each runner and shows one gone whose beats stop coming."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from datetime import UTC, datetime
from typing import Any, cast

from contracts.events import RunnerHeartbeat, WorkflowType
from gpu_runner.runner import Runner
from gpu_runner.settings import RunnerSettings
from messaging.publisher import EventPublisher

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, runner: Runner, publisher: EventPublisher, settings: RunnerSettings) -> None:
        self._runner = runner
        self._publisher = publisher
        self._settings = settings
        self._started_at = datetime.now(UTC)
        self._beating: asyncio.Task[None] | None = None

    def beat(self, *, stopping: bool = False) -> RunnerHeartbeat:
        """The runner's status now."""
        device, memory = _device(self._settings.device)
        return RunnerHeartbeat(
            runner_id=self._settings.name,
            workflows=[cast("WorkflowType", name) for name in self._runner.workflows],
            device=device,
            memory_used_bytes=memory[1] - memory[0] if memory else None,
            memory_total_bytes=memory[1] if memory else None,
            current_job=self._runner.cancellations.running_job,
            healthy=self._runner.health.lost is None,
            problem=self._runner.health.lost[:500] if self._runner.health.lost else None,
            stopping=stopping,
            interval_s=self._settings.heartbeat_interval_s,
            started_at=self._started_at,
        )

    async def start(self) -> None:
        self._beating = asyncio.create_task(self._beat_on(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating; a last beat says the runner is stopping (it shows gone at once)."""
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
        await self._send(self.beat(stopping=True))

    async def _beat_on(self) -> None:
        while True:
            await self._send(self.beat())
            await asyncio.sleep(self._settings.heartbeat_interval_s)

    async def _send(self, beat: RunnerHeartbeat) -> None:
        try:
            await self._publisher.publish(beat)
        except Exception as exc:  # a lost beat is only a late one; jobs must not suffer
            log.warning("heartbeat not published: %r", exc)


def _device(setting: str) -> tuple[str, tuple[int, int] | None]:
    """The device the runner uses and its (free, total) memory. A process that never imported
    torch (the Pillow workflow alone) runs nothing on a GPU: its device is the CPU."""
    if "torch" not in sys.modules:
        return ("cpu" if setting == "auto" else setting), None
    from gpu_runner.workflows.device import choose_device, memory_of

    device = choose_device(setting)
    memory: Any = memory_of(device)
    return device, memory
