"""The runner's heartbeat says what it serves, the job on its device and whether the device can
go on; a runner's last beat, as it stops, says so."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from test_runner_loop import RecordingPublisher, TextToSquare, dispatch, runner

from contracts.events import RunnerHeartbeat
from gpu_runner.failures import AttemptFailure
from gpu_runner.heartbeat import Heartbeat
from gpu_runner.workflows import RenderRequest, StepObserver


class Blocking(TextToSquare):
    """Renders until told to finish, so the test can look at the runner meanwhile."""

    def __init__(self) -> None:
        super().__init__(steps=1)
        self.rendering, self.finish = threading.Event(), threading.Event()

    def render(self, request: RenderRequest, on_step: StepObserver) -> Any:
        self.rendering.set()
        self.finish.wait(10)
        return super().render(request, on_step)


async def test_a_beat_names_the_running_job_and_a_lost_device(tmp_path: Path) -> None:
    publisher, workflow = RecordingPublisher(), Blocking()
    serving = runner(tmp_path, publisher, workflow, heartbeat_interval_s=5, device="cpu")
    heartbeat = Heartbeat(serving, publisher, serving._settings)  # type: ignore[arg-type]
    idle = heartbeat.beat()
    assert (idle.runner_id, idle.workflows, idle.device) == ("r1", ["qwen_image"], "cpu")
    assert (idle.current_job, idle.healthy, idle.stopping, idle.interval_s) == (
        None,
        True,
        False,
        5,
    )
    assert idle.memory_total_bytes is None

    job, envelope = dispatch(job_id=42)
    running = asyncio.create_task(serving.run(job, envelope))
    await asyncio.to_thread(workflow.rendering.wait, 10)
    assert heartbeat.beat().current_job == 42
    workflow.finish.set()
    await running
    assert heartbeat.beat().current_job is None

    serving.health.failed(
        AttemptFailure(
            "device_error", "CUDA error: illegal address", retryable=True, ends_process=True
        )
    )
    lost = heartbeat.beat()
    assert (lost.healthy, lost.problem) == (False, "device_error: CUDA error: illegal address")

    await heartbeat.start()
    while not any(isinstance(event, RunnerHeartbeat) for event in publisher.events):  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # the first beat goes out at once
    await heartbeat.stop()
    beats = [event for event in publisher.events if isinstance(event, RunnerHeartbeat)]
    assert [beat.stopping for beat in beats] == [False, True]
