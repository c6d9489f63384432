"""A broken device ends the process; out of memory is survived, until it repeats; what does not
fit, or contradicts its profile, never starts (fakes: no CUDA here)."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from contracts.envelope import Envelope, Event, RawEnvelope, new_envelope
from contracts.events import JobAttemptFailed, JobCompleted, JobDispatched, JobStarted
from gpu_runner.failures import (
    AttemptFailure,
    DeviceHealth,
    InsufficientMemoryError,
    ProfileError,
    classify,
)
from gpu_runner.runner import Runner, ShuttingDownError
from gpu_runner.settings import QwenEditLightningSettings, QwenEditSettings, RunnerSettings
from gpu_runner.workflows import RenderRequest, StepObserver
from gpu_runner.workflows.diffusion import check_profile
from gpu_runner.workflows.memory import Need, check_fits, plan
from object_store import LocalObjectStore


class AcceleratorError(RuntimeError):
    """Named like torch.AcceleratorError, what torch raises for a CUDA error."""


class OutOfMemoryError(RuntimeError):
    """Named like torch.OutOfMemoryError."""


class Publisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event, *, cause: Envelope[Any] | None = None) -> RawEnvelope:
        self.events.append(event)
        return new_envelope(event, source="test", cause=cause)


class Device:
    """Renders, or raises the errors it is told to, one per render, in order."""

    name = "qwen_image"
    needs_image = False

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.renders = 0

    def check(self) -> None: ...

    def load(self) -> None: ...

    def total_steps(self) -> int:
        return 1

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int:
        return 1

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        self.renders += 1
        if self.errors:
            raise self.errors.pop(0)
        on_step(1, 1)
        return Image.new("RGB", (8, 8))


def dispatch(job_id: int) -> tuple[JobDispatched, RawEnvelope]:
    job = JobDispatched(job_id=job_id, attempt=1, workflow_type="qwen_image", prompt="fox")
    return job, new_envelope(job, source="jobs", correlation_id=f"request-{job_id}")


def runner(tmp_path: Path, device: Device, lost: list[str], **settings: Any) -> Runner:
    return Runner(
        {"qwen_image": device},
        LocalObjectStore(tmp_path),
        Publisher(),
        RunnerSettings(workflows="qwen_image", runner_id="r1", **settings),
        on_device_lost=lost.append,
    )


def test_a_sticky_cuda_error_ends_the_process_an_oom_does_not() -> None:
    for message in (
        "CUDA error: an illegal memory access was encountered",
        "CUDA error: device-side assert triggered",
        "CUDA error: unspecified launch failure",
    ):
        lost = classify(AcceleratorError(message))
        assert (lost.reason, lost.retryable, lost.ends_process) == ("gpu_device_lost", True, True)
    oom = classify(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert (oom.reason, oom.retryable, oom.ends_process) == ("gpu_out_of_memory", True, False)
    assert not classify(ValueError("bad prompt")).ends_process


def test_only_out_of_memory_in_a_row_ends_the_process() -> None:
    health = DeviceHealth(max_consecutive_ooms=2)
    oom = AttemptFailure("gpu_out_of_memory", "x", retryable=True)
    health.failed(oom)
    health.succeeded()  # the cache was freed and the next job ran: the count starts again
    health.failed(oom)
    health.failed(AttemptFailure("canceled", "x", retryable=False))
    assert health.lost is None
    health.failed(oom)
    assert health.lost == "2 out-of-memory failures in a row"


async def test_after_a_sticky_error_the_attempt_is_reported_and_nothing_more_runs(
    tmp_path: Path,
) -> None:
    device = Device(AcceleratorError("CUDA error: an illegal memory access was encountered"))
    lost: list[str] = []
    subject = runner(tmp_path, device, lost)
    outcome = await subject.run(*dispatch(1))
    assert isinstance(outcome, JobAttemptFailed)
    assert (outcome.reason, outcome.retryable) == ("gpu_device_lost", True)  # elsewhere
    assert subject._publisher.events[-1] == outcome  # type: ignore[attr-defined]
    assert lost == [f"gpu_device_lost: {outcome.detail}"]  # told once, after the report
    with pytest.raises(ShuttingDownError):  # a staged job goes back to its queue, unrun
        await subject.run(*dispatch(2))
    assert device.renders == 1


async def test_a_staged_job_does_not_start_on_a_device_that_just_broke(tmp_path: Path) -> None:
    device = Device(AcceleratorError("CUDA error: misaligned address"))
    lost: list[str] = []
    subject = runner(tmp_path, device, lost)
    outcomes = await asyncio.gather(
        subject.run(*dispatch(1)), subject.run(*dispatch(2)), return_exceptions=True
    )
    assert sorted(type(outcome).__name__ for outcome in outcomes) == [
        "JobAttemptFailed",  # whichever took the device first
        "ShuttingDownError",  # the other goes back to its queue
    ]
    assert device.renders == 1
    assert len(lost) == 1


async def test_out_of_memory_is_survived_until_it_repeats(tmp_path: Path) -> None:
    oom = OutOfMemoryError("CUDA out of memory")
    device = Device(oom, OutOfMemoryError("again"))
    lost: list[str] = []
    subject = runner(tmp_path, device, lost, max_consecutive_ooms=2)
    assert (await subject.run(*dispatch(1))).reason == "gpu_out_of_memory"  # type: ignore[union-attr]
    assert lost == []
    assert isinstance(await subject.run(*dispatch(2)), JobAttemptFailed)
    assert lost == ["2 out-of-memory failures in a row"]

    survivor = Device(OutOfMemoryError("once"))
    subject = runner(tmp_path / "again", survivor, lost := [], max_consecutive_ooms=2)
    await subject.run(*dispatch(3))
    assert isinstance(await subject.run(*dispatch(4)), JobCompleted)
    assert isinstance(await subject.run(*dispatch(5)), JobCompleted)
    assert lost == []
    starts = [e.job_id for e in subject._publisher.events if isinstance(e, JobStarted)]  # type: ignore[attr-defined]
    assert starts == [3, 4, 5]


class Sized:
    def __init__(self, name: str, *needs: Need) -> None:
        self.name = name
        self._needs = list(needs)

    def memory_needs(self) -> list[Need]:
        return self._needs


GIB = 2**30


def test_memory_counts_shared_components_once_and_one_jobs_working_memory(
    tmp_path: Path,
) -> None:
    encoder, other = tmp_path / "a" / "text_encoder", tmp_path / "b" / "text_encoder"
    for directory, data in ((encoder, b"weights"), (other, b"other weights")):
        directory.mkdir(parents=True)
        (directory / "model.safetensors").write_bytes(data)
    edit = Sized(
        "edit",
        Need("transformer", 38 * GIB),
        Need("text_encoder", 16 * GIB, encoder),
        Need("working", 8 * GIB, working=True),
    )
    fast = Sized(
        "fast",
        Need("transformer", 38 * GIB),
        Need("text_encoder", 16 * GIB, encoder),  # same files: loaded once
        Need("working", 6 * GIB, working=True),
    )
    assert sum(line.bytes for line in plan([edit, fast])) == (38 + 38 + 16 + 8) * GIB
    unshared = Sized("t2i", Need("text_encoder", 16 * GIB, other))
    assert sum(line.bytes for line in plan([edit, unshared])) == (38 + 16 + 16 + 8) * GIB

    check_fits([edit], 79 * GIB, 80 * GIB, "cuda", ["edit"])
    with pytest.raises(InsufficientMemoryError) as refused:
        check_fits([edit, fast], 79 * GIB, 80 * GIB, "cuda:1", ["edit", "fast"])
    message = str(refused.value)
    assert "needs about 100.0 GiB on cuda:1, which has 79.0 GiB free of 80.0 GiB" in message
    assert "shared (edit)" in message
    assert "docs/deployment.md" in message


def test_an_fp8_transformer_is_counted_as_it_loads_before_it_is_quantized() -> None:
    """torchao quantizes the transformer once it has loaded in bf16: then it holds its full size
    beside every other weight (no job runs yet), more than the quantized workflow serves with."""
    fp8 = Sized(
        "edit",
        Need("transformer", 19 * GIB, loading=19 * GIB),
        Need("text_encoder", 15 * GIB),
        Need("working", 8 * GIB, working=True),
    )
    with pytest.raises(InsufficientMemoryError) as refused:  # serving: 42 GiB; loading: 53
        check_fits([fp8], 44 * GIB, 48 * GIB, "cuda", ["edit"])
    message = str(refused.value)
    assert "needs about 53.0 GiB on cuda, which has 44.0 GiB free" in message
    assert "+19.0 GiB while it loads" in message
    check_fits([fp8], 54 * GIB, 80 * GIB, "cuda", ["edit"])


def test_a_profile_is_validated_before_anything_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    check_profile("qwen_edit_2511", QwenEditSettings())
    check_profile("qwen_edit_2511_lightning", QwenEditLightningSettings())
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_LIGHTNING_STEPS", "40")
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_LIGHTNING_GUIDANCE", "4")
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_LIGHTNING_SCHEDULER_SHIFT", "1")
    with pytest.raises(ProfileError) as refused:
        check_profile("qwen_edit_2511_lightning", QwenEditLightningSettings())
    message = str(refused.value)
    assert "STEPS=40, Lightning runs 4 or 8" in message
    assert "GUIDANCE=4.0, Lightning runs without CFG" in message
    assert "SCHEDULER_SHIFT=1.0, Lightning was distilled at 3" in message
    assert "is for 4" in message  # the LoRA's file name says 4 steps
    with pytest.raises(ProfileError, match="no LORA_PATH"):
        check_profile("x", QwenEditLightningSettings(steps=8, lora_path=""))
    with pytest.raises(ProfileError, match="is for 8"):
        check_profile("x", QwenEditSettings(lora_path="style-8steps.safetensors", steps=40))


def test_an_attention_backend_this_machine_cannot_run_is_refused_before_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from diffusers.models import attention_dispatch

    check_profile("x", QwenEditSettings(attention_backend="native"))
    with pytest.raises(ProfileError, match="ATTENTION_BACKEND=fast is none of diffusers'"):
        check_profile("x", QwenEditSettings(attention_backend="fast"))
    monkeypatch.setattr(attention_dispatch, "_CAN_USE_FLASH_ATTN", False)  # flash-attn absent
    with pytest.raises(ProfileError, match=r"ATTENTION_BACKEND=flash: .*flash-attn"):
        check_profile("x", QwenEditSettings(attention_backend="flash"))
