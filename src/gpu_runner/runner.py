"""The worker loop: take a dispatched job, run its workflow, store the result, report.

Per message: fetch and decode the input (overlapping whatever runs on the device now), wait
for the device (one job at a time), run the steps on the inference thread, then encode, store
and publish the outcome while the next job already runs. The message is acknowledged only
after its outcome is published, so a runner that dies mid-job leaves it to another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from contracts.envelope import Envelope, Event, RawEnvelope
from contracts.events import (
    WORKFLOW_TYPES,
    AnyJobDispatched,
    JobAttemptFailed,
    JobCanceled,
    JobCompleted,
    JobDispatched,
    JobDispatchedV1,
    JobFailed,
    JobProgress,
    JobStarted,
)
from gpu_runner.cancellations import Cancellations
from gpu_runner.failures import (
    MODERATION_REFUSED,
    AttemptFailure,
    DeviceHealth,
    JobCanceledError,
    classify,
)
from gpu_runner.images import InvalidImageError, decode_image, encode_png
from gpu_runner.metrics import BusyMeter
from gpu_runner.settings import RunnerSettings
from gpu_runner.workflows import RenderRequest, Workflow
from gpu_runner.workflows.device import bind_device
from messaging.consumer import EventConsumer, MalformedMessageError
from messaging.logs import handling
from messaging.metrics import HANDLER_SECONDS, MESSAGES_CONSUMED
from moderation import Moderation

if TYPE_CHECKING:
    from PIL import Image
from object_store import InvalidKeyError, ObjectNotFoundError, ObjectStore, ObjectTooLargeError

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, event: Event, *, cause: Envelope[Any] | None = None) -> RawEnvelope: ...


@dataclass(frozen=True)
class Outcome:
    event: JobCompleted | JobAttemptFailed
    envelope: RawEnvelope


class Runner:
    """Runs dispatched jobs one at a time on its device and reports each outcome once."""

    def __init__(
        self,
        workflows: Mapping[str, Workflow],
        store: ObjectStore,
        publisher: Publisher,
        settings: RunnerSettings,
        cancellations: Cancellations | None = None,
        meter: BusyMeter | None = None,
        *,
        stop_consuming: Callable[[], Awaitable[None]] | None = None,
        on_device_lost: Callable[[str], None] | None = None,
        moderation: Moderation | None = None,
    ) -> None:
        """`stop_consuming` is awaited once the device is found unusable, before any staged job
        is handed back (else the broker would hand it straight back here); `on_device_lost` is
        called after the failed attempt is reported: the process should then stop."""
        self.workflows = dict(workflows)
        self.cancellations = cancellations or Cancellations()
        self.meter = meter or BusyMeter(settings.name)
        self.loaded = False
        self.health = DeviceHealth(settings.max_consecutive_ooms)
        self._stop_consuming = stop_consuming
        self._on_device_lost = on_device_lost or (lambda reason: None)
        self._stopping = False
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._moderation = moderation or Moderation.off()
        self._device = asyncio.Lock()
        self._inference = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="inference",
            # torch's current CUDA device is per thread: `cuda:N` must be this thread's
            initializer=bind_device,
            initargs=(settings.device,),
        )

    async def load(self) -> None:
        """Load every served pipeline once, on the inference thread, before taking jobs."""
        loop = asyncio.get_running_loop()
        for workflow in self.workflows.values():
            started = time.monotonic()
            await loop.run_in_executor(self._inference, workflow.load)
            log.info("workflow %s ready in %.1fs", workflow.name, time.monotonic() - started)
        self.loaded = True

    async def stop_taking(self) -> None:
        """On shutdown: jobs staged but not started go back to the queue instead of running."""
        self._stopping = True

    def close(self) -> None:
        self._inference.shutdown(wait=False, cancel_futures=True)

    async def on_message(self, message: RabbitMessage, *, queue: str = "gpu") -> None:
        """The work-queue subscriber: settles every message, acknowledging after the outcome."""
        try:
            envelope, job = parse_dispatch(message.body)
        except UnrunnableDispatchError as exc:
            with handling(correlation_id=message.correlation_id, event_id=message.message_id):
                outcome = await self._refuse(message, exc)
            MESSAGES_CONSUMED.labels(queue, "job.dispatched", outcome).inc()
            return
        started = time.perf_counter()
        with handling(
            correlation_id=envelope.correlation_id,
            event_id=str(envelope.id),
            event_type=envelope.type,
        ):
            outcome = await self._settle(message, job, envelope)
        MESSAGES_CONSUMED.labels(queue, envelope.type, outcome).inc()
        if outcome == "ok":
            HANDLER_SECONDS.labels(queue, envelope.type).observe(time.perf_counter() - started)

    async def _settle(
        self, message: RabbitMessage, job: AnyJobDispatched, envelope: RawEnvelope
    ) -> str:
        try:
            await self.run(job, envelope)
        except asyncio.CancelledError:
            raise
        except ShuttingDownError:
            log.info("job %s not started; returning it to the queue for another runner", job.job_id)
            # nack, not reject: RabbitMQ counts only rejects towards a quorum queue's delivery
            # limit, and a job handed back unstarted has not failed anywhere
            await message.nack(requeue=True)
            return "returned"
        except Exception:
            log.exception("job %s: outcome not published; returning it to the queue", job.job_id)
            await message.reject(requeue=True)
            return "retry"
        await message.ack()
        return "ok"

    async def on_cancel(self, message: RabbitMessage) -> None:
        """The per-runner cancel subscriber: a job canceled, or failed for good (refunded), stops
        at its next step here, and any copy of it still queued is skipped, not run."""
        try:
            _, event = EventConsumer.decode(message.body)
        except MalformedMessageError as exc:
            log.warning("ignoring unreadable message on the cancel queue: %s", exc)
            return
        if isinstance(event, JobCanceled | JobFailed) and self.cancellations.cancel(event.job_id):
            log.info("job %s closed while running here; stopping at its next step", event.job_id)

    async def run(
        self, job: AnyJobDispatched, envelope: RawEnvelope
    ) -> JobCompleted | JobAttemptFailed:
        """Run one dispatched job and publish its outcome."""
        try:
            outcome: JobCompleted | JobAttemptFailed = await self._attempt(job, envelope)
        except ShuttingDownError:
            raise
        except Exception as error:  # reported, so jobs decides: retry up to its limit, or fail
            failure = classify(error)
            if not isinstance(error, AttemptFailure):
                log.exception("job %s attempt %s broke unexpectedly", job.job_id, job.attempt)
            log.warning("job %s attempt %s failed: %s", job.job_id, job.attempt, failure)
            outcome = JobAttemptFailed(
                job_id=job.job_id,
                attempt=job.attempt,
                retryable=failure.retryable,
                reason=failure.reason,
                detail=failure.detail,
            )
        try:
            await self._publish(outcome, envelope)
        finally:
            if self.health.lost is not None:
                self._on_device_lost(self.health.lost)
        return outcome

    async def _attempt(self, job: AnyJobDispatched, envelope: RawEnvelope) -> JobCompleted:
        if self.cancellations.is_canceled(job.job_id):
            raise AttemptFailure("canceled", "canceled before it started", retryable=False)
        if (done := await self._finished(job, envelope.correlation_id)) is not None:
            log.info("job %s already has a result; reporting it again", job.job_id)
            return done
        workflow = self.workflows.get(job.workflow_type)
        if workflow is None:
            raise AttemptFailure(
                "unsupported_workflow",
                f"this runner serves {', '.join(self.workflows)}, not {job.workflow_type}",
                retryable=False,
            )
        request = await self._prepare(job, workflow)
        reports: list[Awaitable[None]] = []
        try:
            async with self._device:
                if self._stopping:
                    raise ShuttingDownError(job.job_id)
                if self.cancellations.is_canceled(job.job_id):  # while it waited for the device
                    raise AttemptFailure("canceled", "canceled before it started", retryable=False)
                started = time.monotonic()
                with self.meter.busy(workflow.name):
                    image = await self._guarded(
                        self._infer(job, envelope, workflow, request, reports)
                    )
            await self._check_result(job, image)  # the device is free for the next job
            png = await asyncio.to_thread(encode_png, image)
            try:
                result = await self._store_result(
                    job, envelope.correlation_id, png, request.seed, started
                )
            except Exception as exc:
                raise AttemptFailure("storage_unavailable", repr(exc), retryable=True) from exc
        finally:
            for report in reports:
                await report
        return result

    async def _prepare(self, job: AnyJobDispatched, workflow: Workflow) -> RenderRequest:
        seed = workflow.seed_for(job.job_id, job.seed)
        if not workflow.needs_image:
            return RenderRequest(prompt=job.prompt, image=None, seed=seed)
        if not job.images:
            raise AttemptFailure(
                "missing_image", f"{workflow.name} needs an image", retryable=False
            )
        first, *more = [await self._input(key) for key in job.images]
        return RenderRequest(prompt=job.prompt, image=first, seed=seed, more_images=tuple(more))

    async def _input(self, key: str) -> Image.Image:
        try:
            data = await self._store.get(key, max_bytes=self._settings.max_input_bytes)
        except (ObjectNotFoundError, InvalidKeyError) as exc:
            raise AttemptFailure("missing_image", f"no image at {key!r}", retryable=False) from exc
        except ObjectTooLargeError as exc:
            raise AttemptFailure("image_too_large", str(exc), retryable=False) from exc
        except Exception as exc:
            raise AttemptFailure("storage_unavailable", repr(exc), retryable=True) from exc
        try:
            return await asyncio.to_thread(
                decode_image,
                data,
                allowed_formats=self._settings.formats,
                max_pixels=self._settings.max_input_pixels,
            )
        except InvalidImageError as exc:
            raise AttemptFailure(exc.reason, exc.detail, retryable=False) from exc

    async def _check_result(self, job: AnyJobDispatched, image: Image.Image) -> None:
        """A result the moderation refuses is never stored or delivered: the attempt fails
        for good (jobs fails the job, billing refunds it, the user is told why)."""
        verdict = await self._moderation.check_image(image)
        log.info("job %s result moderation: %s", job.job_id, verdict.summary())
        if verdict.refused:
            raise AttemptFailure(MODERATION_REFUSED, verdict.summary(), retryable=False)

    async def _guarded(self, inference: Awaitable[Any]) -> Any:
        """Run the job's steps, holding the device; after a failure that leaves it unusable, no
        staged job starts (each goes back to its queue) and the process is told to stop."""
        try:
            image = await inference
        except AttemptFailure as failure:
            self.health.failed(failure)
            if self.health.lost is not None and not self._stopping:
                log.critical("device unusable (%s): taking no more jobs", self.health.lost)
                self._stopping = True
                if self._stop_consuming is not None:
                    await self._stop_consuming()
            raise
        self.health.succeeded()
        return image

    async def _infer(
        self,
        job: AnyJobDispatched,
        envelope: RawEnvelope,
        workflow: Workflow,
        request: RenderRequest,
        reports: list[Awaitable[None]],
    ) -> Any:
        total = workflow.total_steps()
        started = JobStarted(
            job_id=job.job_id, attempt=job.attempt, runner_id=self._settings.name, total_steps=total
        )
        announced = asyncio.create_task(self._publish_quietly(started, envelope))
        progress = ProgressReporter(
            job,
            self._settings.progress_interval_s,
            lambda event: self._publish_quietly(event, envelope),
            after=announced,
        )
        reports.append(progress.close())
        with self.cancellations.running(job.job_id) as canceled:

            def step_done(step: int, total_steps: int) -> None:
                if canceled.is_set():
                    raise JobCanceledError(step, total_steps)
                progress.step_done(step, total_steps)

            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(
                    self._inference, workflow.render, request, step_done
                )
            except JobCanceledError as exc:
                raise AttemptFailure("canceled", str(exc), retryable=False) from exc
            except Exception as exc:
                raise classify(exc) from exc

    def _result_keys(self, job_id: int, request: str) -> tuple[str, str]:
        """Named by the job and its request (the correlation id): a job id alone repeats when
        a database is recreated beside an object store that keeps its objects."""
        token = re.sub(r"[^A-Za-z0-9-]", "", request)[:64] or "request"
        base = f"{self._settings.result_prefix}/{job_id}-{token}"
        return f"{base}.png", f"{base}.json"

    async def _store_result(
        self, job: AnyJobDispatched, request: str, png: bytes, seed: int, started: float
    ) -> JobCompleted:
        image_key, record_key = self._result_keys(job.job_id, request)
        await self._store.put(image_key, png, content_type="image/png")
        completed = JobCompleted(
            job_id=job.job_id,
            attempt=job.attempt,
            result_key=image_key,
            duration_ms=round((time.monotonic() - started) * 1000),
            seed=seed,
        )
        # Written last: its presence means the job is done (see `_finished`).
        record = completed.model_dump_json().encode()
        await self._store.put(record_key, record, content_type="application/json")
        return completed

    async def _finished(self, job: AnyJobDispatched, request: str) -> JobCompleted | None:
        """A result stored by an earlier delivery of this job, so it never runs twice."""
        _, record_key = self._result_keys(job.job_id, request)
        try:
            if not await self._store.exists(record_key):
                return None
            record = json.loads(await self._store.get(record_key, max_bytes=10_000))
            return JobCompleted.model_validate({**record, "attempt": job.attempt})
        except Exception:
            # Unreadable: run the job (jobs takes only one completion); never fail it for this.
            log.exception("job %s: cannot read its result record %s", job.job_id, record_key)
            return None

    async def _publish(self, event: Event, cause: RawEnvelope) -> None:
        """Publish with confirms, retrying through a broker hiccup for `publish_retry_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.publish_retry_s
        delay = 0.2
        while True:
            try:
                await self._publisher.publish(event, cause=cause)
                return
            except Exception as exc:
                if loop.time() + delay > deadline:
                    raise
                log.warning(
                    "publishing %s failed (%r); retrying in %.1fs", event.event_type, exc, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _publish_quietly(self, event: Event, cause: RawEnvelope) -> None:
        """For JobStarted and JobProgress: informative, never worth failing a job over."""
        try:
            await self._publish(event, cause)
        except Exception:
            log.exception("could not publish %s", event.event_type)

    async def _refuse(self, message: RabbitMessage, error: UnrunnableDispatchError) -> str:
        if error.failed is None or error.envelope is None:
            log.error("dead-lettering unreadable dispatch %s: %s", message.message_id, error)
            await message.reject(requeue=False)
            return "dead_letter"
        log.warning("refusing dispatch of job %s: %s", error.failed.job_id, error)
        try:
            await self._publish(error.failed, error.envelope)
        except Exception:
            log.exception("refusal of job %s not published; returning it", error.failed.job_id)
            await message.reject(requeue=True)
            return "retry"
        await message.ack()
        return "refused"


class ProgressReporter:
    """Throttled JobProgress: steps noted on the inference thread, published on the loop; the
    last step is not reported (JobCompleted follows it at once).

    Publishing starts only once `after` (the JobStarted publish) is done, so the order holds.
    """

    def __init__(
        self,
        job: AnyJobDispatched,
        interval_s: float,
        publish: Callable[[JobProgress], Awaitable[None]],
        *,
        after: Awaitable[None],
    ) -> None:
        self._job = job
        self._interval_s = interval_s
        self._publish = publish
        self._loop = asyncio.get_running_loop()
        self._steps: asyncio.Queue[JobProgress | None] = asyncio.Queue()
        self._last_noted = float("-inf")
        self._sending = asyncio.create_task(self._send(after))

    def step_done(self, step: int, total: int) -> None:
        if step >= total:
            return  # "step N of N" says nothing: JobCompleted follows it at once
        now = time.monotonic()
        if now - self._last_noted < self._interval_s:
            return
        self._last_noted = now
        event = JobProgress(
            job_id=self._job.job_id, attempt=self._job.attempt, step=step, total_steps=total
        )
        self._loop.call_soon_threadsafe(self._steps.put_nowait, event)

    async def close(self) -> None:
        """Wait until every noted step is published."""
        self._steps.put_nowait(None)
        await self._sending

    async def _send(self, after: Awaitable[None]) -> None:
        await after
        while (event := await self._steps.get()) is not None:
            await self._publish(event)


class ShuttingDownError(Exception):
    """The runner is stopping: a staged job is handed back rather than started."""


class UnrunnableDispatchError(ValueError):
    """A work-queue message that is no runnable JobDispatched.

    When its envelope still names a job and attempt, `failed` is the permanent
    JobAttemptFailed that tells jobs (and so the user); otherwise the message is dead-lettered.
    """

    def __init__(
        self,
        detail: str,
        envelope: RawEnvelope | None = None,
        failed: JobAttemptFailed | None = None,
    ) -> None:
        super().__init__(detail)
        self.envelope = envelope
        self.failed = failed


def parse_dispatch(body: bytes) -> tuple[RawEnvelope, AnyJobDispatched]:
    try:
        envelope, event = EventConsumer.decode(body)
    except MalformedMessageError as exc:
        raise _salvage(body, str(exc)) from exc
    if not isinstance(event, JobDispatched | JobDispatchedV1):
        raise UnrunnableDispatchError(f"{envelope.type} is not a job.dispatched")
    return envelope, event


def _salvage(body: bytes, detail: str) -> UnrunnableDispatchError:
    try:
        envelope = RawEnvelope.model_validate_json(body)
    except ValidationError:
        return UnrunnableDispatchError(detail)
    if envelope.type != JobDispatched.event_type:
        return UnrunnableDispatchError(detail)
    workflow = envelope.data.get("workflow_type")
    reason = "unsupported_workflow" if workflow not in WORKFLOW_TYPES else "invalid_dispatch"
    try:
        failed = JobAttemptFailed(
            job_id=envelope.data.get("job_id"),
            attempt=envelope.data.get("attempt"),
            retryable=False,
            reason=reason,
            detail=detail[:2000],
        )
    except ValidationError:
        return UnrunnableDispatchError(detail)
    return UnrunnableDispatchError(detail, envelope, failed)
