"""The runner's decisions with a fake workflow and publisher (the broker is in integration)."""

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from contracts.envelope import Envelope, Event, RawEnvelope, new_envelope
from contracts.events import (
    JobAttemptFailed,
    JobCompleted,
    JobDispatchedV1,
    JobProgress,
    JobStarted,
)
from gpu_runner.runner import Runner, ShuttingDownError
from gpu_runner.settings import RunnerSettings
from gpu_runner.workflows import RenderRequest, StepObserver
from object_store import LocalObjectStore


class RecordingPublisher:
    def __init__(self, fail_completed: int = 0) -> None:
        self.events: list[Event] = []
        self.attempts = 0
        self._fail_completed = fail_completed

    async def publish(self, event: Event, *, cause: Envelope[Any] | None = None) -> RawEnvelope:
        self.attempts += 1
        if isinstance(event, JobCompleted) and self._fail_completed:
            self._fail_completed -= 1
            raise ConnectionError("broker gone")
        self.events.append(event)
        return new_envelope(event, source="test", cause=cause)


class TextToSquare:
    name = "qwen_image"
    needs_image = False

    def __init__(self, steps: int = 4) -> None:
        self.steps = steps
        self.renders = 0

    def check(self) -> None: ...

    def load(self) -> None: ...

    def total_steps(self) -> int:
        return self.steps

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int:
        return dispatched_seed or 1

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        self.renders += 1
        for step in range(1, self.steps + 1):
            on_step(step, self.steps)
        return Image.new("RGB", (8, 8), (request.seed % 256, 0, 0))


def dispatch(job_id: int = 1, attempt: int = 1) -> tuple[JobDispatchedV1, RawEnvelope]:
    job = JobDispatchedV1(
        job_id=job_id, attempt=attempt, workflow_type="qwen_image", prompt="fox", seed=7
    )
    return job, new_envelope(job, source="jobs", correlation_id=f"request-{job_id}")


def runner(
    tmp_path: Path, publisher: RecordingPublisher, workflow: TextToSquare, **settings: Any
) -> Runner:
    return Runner(
        {"qwen_image": workflow},
        LocalObjectStore(tmp_path),
        publisher,
        RunnerSettings(workflows="qwen_image", runner_id="r1", **settings),
    )


async def test_outcome_comes_last_after_started_and_every_progress(tmp_path: Path) -> None:
    publisher, workflow = RecordingPublisher(), TextToSquare()
    outcome = await runner(tmp_path, publisher, workflow, progress_interval_s=0).run(*dispatch())
    assert [event.event_type for event in publisher.events] == [
        "job.started",
        *["job.progress"] * 3,  # steps 1-3 of 4: the last step is JobCompleted's to tell
        "job.completed",
    ]
    assert isinstance(outcome, JobCompleted)
    assert (outcome.result_key, outcome.seed) == ("results/1-request-1.png", 7)
    assert (tmp_path / "results" / "1-request-1.png").is_file()


async def test_progress_is_throttled(tmp_path: Path) -> None:
    publisher, workflow = RecordingPublisher(), TextToSquare(steps=50)
    await runner(tmp_path, publisher, workflow, progress_interval_s=60).run(*dispatch())
    progress = [e for e in publisher.events if isinstance(e, JobProgress)]
    assert [p.step for p in progress] == [1]


async def test_a_finished_job_is_reported_again_not_rerun(tmp_path: Path) -> None:
    publisher, workflow = RecordingPublisher(), TextToSquare()
    first = await runner(tmp_path, publisher, workflow).run(*dispatch(attempt=1))
    again = await runner(tmp_path, publisher, workflow).run(*dispatch(attempt=2))
    assert workflow.renders == 1
    assert isinstance(first, JobCompleted)
    assert again == first.model_copy(update={"attempt": 2})


async def test_the_same_job_id_of_another_request_runs_anew(tmp_path: Path) -> None:
    """A database recreated beside a kept object store numbers its jobs from 1 again: the
    earlier database's result must not be handed to the new request."""
    publisher, workflow = RecordingPublisher(), TextToSquare()
    job, envelope = dispatch(job_id=1)
    first = await runner(tmp_path, publisher, workflow).run(job, envelope)
    other = new_envelope(job, source="jobs", correlation_id="another-request")
    second = await runner(tmp_path, publisher, workflow).run(job, other)
    assert workflow.renders == 2
    assert isinstance(first, JobCompleted)
    assert isinstance(second, JobCompleted)
    assert second.result_key != first.result_key


async def test_a_canceled_job_does_not_start_and_a_wrong_workflow_is_refused(
    tmp_path: Path,
) -> None:
    publisher, workflow = RecordingPublisher(), TextToSquare()
    subject = runner(tmp_path, publisher, workflow)
    subject.cancellations.cancel(1)
    canceled = await subject.run(*dispatch(job_id=1))
    job = JobDispatchedV1(job_id=2, attempt=1, workflow_type="pillow_filter", prompt="blur")
    refused = await subject.run(job, new_envelope(job, source="jobs"))
    assert isinstance(canceled, JobAttemptFailed)
    assert (canceled.reason, canceled.retryable) == ("canceled", False)
    assert isinstance(refused, JobAttemptFailed)
    assert (refused.reason, refused.retryable) == ("unsupported_workflow", False)
    assert workflow.renders == 0


async def test_an_outcome_publish_is_retried_through_a_broker_hiccup(tmp_path: Path) -> None:
    publisher = RecordingPublisher(fail_completed=2)
    await runner(tmp_path, publisher, TextToSquare(steps=2), publish_retry_s=5).run(*dispatch())
    assert [event.event_type for event in publisher.events] == [
        "job.started",
        "job.progress",
        "job.completed",
    ]
    assert publisher.attempts == 5


async def test_an_outcome_that_cannot_be_published_raises_so_the_job_returns(
    tmp_path: Path,
) -> None:
    publisher = RecordingPublisher(fail_completed=100)
    subject = runner(tmp_path, publisher, TextToSquare(steps=1), publish_retry_s=0.3)
    with pytest.raises(ConnectionError):
        await subject.run(*dispatch())


class Gate(TextToSquare):
    """Renders only when the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(steps=1)
        self.rendering = threading.Event()
        self.open = threading.Event()

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        self.rendering.set()
        self.open.wait(timeout=10)
        return super().render(request, on_step)


async def test_on_shutdown_a_staged_job_goes_back_instead_of_starting(tmp_path: Path) -> None:
    publisher, workflow = RecordingPublisher(), Gate()
    subject = runner(tmp_path, publisher, workflow)
    running = asyncio.create_task(subject.run(*dispatch(job_id=1)))
    await asyncio.to_thread(workflow.rendering.wait, 10)
    staged = asyncio.create_task(subject.run(*dispatch(job_id=2)))
    await asyncio.sleep(0.05)
    await subject.stop_taking()
    workflow.open.set()
    assert isinstance(await running, JobCompleted)  # the running job finishes and reports
    with pytest.raises(ShuttingDownError):
        await staged
    assert workflow.renders == 1
    assert [e.job_id for e in publisher.events if isinstance(e, JobStarted)] == [1]


async def test_a_job_canceled_while_staged_does_not_start(tmp_path: Path) -> None:
    """Canceled while it waited for the device behind another job: it never takes the device
    (no JobStarted after JobCanceled, no render), it is reported canceled."""
    publisher, workflow = RecordingPublisher(), Gate()
    subject = runner(tmp_path, publisher, workflow)
    running = asyncio.create_task(subject.run(*dispatch(job_id=1)))
    await asyncio.to_thread(workflow.rendering.wait, 10)
    staged = asyncio.create_task(subject.run(*dispatch(job_id=2)))
    await asyncio.sleep(0.05)  # fetched and waiting for the device
    subject.cancellations.cancel(2)
    workflow.open.set()
    assert isinstance(await running, JobCompleted)
    canceled = await staged
    assert isinstance(canceled, JobAttemptFailed)
    assert (canceled.reason, canceled.retryable) == ("canceled", False)
    assert workflow.renders == 1
    assert [e.job_id for e in publisher.events if isinstance(e, JobStarted)] == [1]


async def test_a_result_that_cannot_be_stored_is_a_retryable_failure(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("a file where the results directory should be")
    publisher = RecordingPublisher()
    outcome = await runner(tmp_path, publisher, TextToSquare()).run(*dispatch())
    assert isinstance(outcome, JobAttemptFailed)
    assert (outcome.reason, outcome.retryable) == ("storage_unavailable", True)
    assert publisher.events[-1] == outcome


class BrokenAfterRender(TextToSquare):
    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        super().render(request, on_step)
        return "not an image"  # type: ignore[return-value]  # e.g. a pipeline that misbehaves


async def test_an_unexpected_error_is_reported_not_looped_through_the_queue(
    tmp_path: Path,
) -> None:
    publisher = RecordingPublisher()
    outcome = await runner(tmp_path, publisher, BrokenAfterRender()).run(*dispatch())
    assert isinstance(outcome, JobAttemptFailed)
    assert (outcome.reason, outcome.retryable) == ("runner_error", True)  # jobs caps retries
    assert publisher.events[-1] == outcome
