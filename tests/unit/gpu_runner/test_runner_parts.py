import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from contracts.envelope import new_envelope
from contracts.events import JobDispatchedV1
from gpu_runner.app import Settings as RunnerApp
from gpu_runner.app import create_app
from gpu_runner.cancellations import Cancellations
from gpu_runner.failures import AttemptFailure, ModelDirectoryMissingError, classify
from gpu_runner.runner import UnrunnableDispatchError, parse_dispatch
from gpu_runner.settings import RunnerSettings
from gpu_runner.workflows import build_workflows
from gpu_runner.workflows.base import choose_seed
from gpu_runner.workflows.diffusion import output_size
from imagebot.cli import app


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the runner recognises by name."""


def test_failures_are_classified() -> None:
    assert classify(OutOfMemoryError("CUDA out of memory")).reason == "gpu_out_of_memory"
    lost = classify(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert (lost.reason, lost.retryable) == ("gpu_device_lost", True)
    missing = classify(FileNotFoundError("/models/x/model_index.json"))
    assert (missing.reason, missing.retryable) == ("model_unavailable", False)
    assert classify(ValueError("?")).retryable
    permanent = AttemptFailure("corrupt_image", "x", retryable=False)
    assert classify(permanent) is permanent


def test_seeds_follow_the_policy() -> None:
    assert choose_seed("job", 0, job_id=5, dispatched=42) == 42
    derived = choose_seed("job", 0, job_id=5, dispatched=None)
    assert derived == choose_seed("job", 0, job_id=5, dispatched=None)  # a retry reproduces it
    assert derived != choose_seed("job", 0, job_id=6, dispatched=None)
    assert 0 <= derived < 2**63
    assert choose_seed("fixed", 9, job_id=5, dispatched=42) == 9
    assert choose_seed("random", 0, 5, None) != choose_seed("random", 0, 5, None)


def test_a_cancel_flags_the_running_job_and_is_remembered() -> None:
    cancellations = Cancellations(remember=2)
    with cancellations.running(1) as flag:
        assert not flag.is_set()
        assert cancellations.cancel(1)
        assert flag.is_set()
    assert not cancellations.cancel(2)  # not running here, remembered for later
    assert cancellations.is_canceled(2)
    cancellations.cancel(3)
    assert not cancellations.is_canceled(1)  # the oldest is forgotten past `remember`


def test_outputs_keep_the_aspect_ratio_in_multiples_of_16() -> None:
    assert output_size(1024, 1.0) == (1024, 1024)
    width, height = output_size(1024, 4 / 3)
    assert (width % 16, height % 16) == (0, 0)
    assert abs(width * height - 1024 * 1024) < 0.03 * 1024 * 1024


def test_settings_name_only_known_workflows() -> None:
    assert RunnerSettings(workflows=" qwen_image, pillow_filter ").served == (
        "qwen_image",
        "pillow_filter",
    )
    with pytest.raises(ValidationError, match="GPU_WORKFLOWS"):
        RunnerSettings(workflows="qwen_image,sdxl")


def test_a_missing_model_directory_stops_the_runner_before_it_starts(tmp_path: Path) -> None:
    settings = RunnerSettings(workflows="qwen_edit_2511", models_dir=tmp_path)
    with pytest.raises(ModelDirectoryMissingError, match="Qwen-Image-Edit-2511"):
        create_app(RunnerApp(runner=settings))
    assert "pillow_filter" in build_workflows(RunnerSettings(workflows="pillow_filter"))


def test_a_dispatch_for_an_unknown_workflow_is_answered_not_dead_lettered() -> None:
    job = JobDispatchedV1(job_id=3, attempt=2, workflow_type="qwen_image", prompt="p")
    envelope = new_envelope(job, source="test").model_dump(mode="json")
    assert parse_dispatch(json.dumps(envelope).encode())[1] == job
    envelope["data"]["workflow_type"] = "flux"
    with pytest.raises(UnrunnableDispatchError) as caught:
        parse_dispatch(json.dumps(envelope).encode())
    assert caught.value.failed is not None
    assert (caught.value.failed.job_id, caught.value.failed.attempt) == (3, 2)
    assert caught.value.failed.reason == "unsupported_workflow"
    assert not caught.value.failed.retryable
    with pytest.raises(UnrunnableDispatchError) as garbage:
        parse_dispatch(b"{not json")
    assert garbage.value.failed is None  # nothing to answer: the DLQ keeps it


def test_the_gpu_check_command_names_missing_model_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_WORKFLOWS", "qwen_image,pillow_filter")
    monkeypatch.setenv("GPU_MODELS_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["gpu", "check"])
    assert result.exit_code == 2
    assert f"qwen_image: MISSING: workflow qwen_image: no diffusers model in {tmp_path}" in (
        result.output
    )
    assert "pillow_filter: ok" in result.output
    (tmp_path / "Qwen-Image").mkdir()
    (tmp_path / "Qwen-Image" / "model_index.json").write_text("{}")
    assert CliRunner().invoke(app, ["gpu", "check"]).exit_code == 0
