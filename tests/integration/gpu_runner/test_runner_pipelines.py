"""Tiny random Qwen-Image pipelines through the runner's production loading path (on CPU)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from contracts.events import JobDispatchedV1
from contracts.topology import Topology
from gpu_runner.settings import RunnerSettings
from gpu_runner.workflows import RenderRequest, build_workflows
from gpu_runner.workflows.diffusion import edit_reference_size
from sandbox.models import (
    build_tiny_edit_pipeline,
    build_tiny_text_to_image_pipeline,
    shrink_edit_image_sizes,
)
from support.runner import Reports, png, publish, serving_runner

STEPS = 3


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both tiny pipelines, built once per test session, saved like real model directories."""
    root = tmp_path_factory.mktemp("models")
    build_tiny_edit_pipeline(root / "Qwen-Image-Edit-2511")
    build_tiny_text_to_image_pipeline(root / "Qwen-Image")
    return root


@pytest.fixture
def tiny_settings(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> RunnerSettings:
    shrink_edit_image_sizes()
    for prefix in ("GPU_QWEN_EDIT_2511_", "GPU_QWEN_IMAGE_"):
        monkeypatch.setenv(f"{prefix}STEPS", str(STEPS))
        monkeypatch.setenv(f"{prefix}RESOLUTION", "64")
        monkeypatch.setenv(f"{prefix}GUIDANCE", "2.0")  # true CFG on: the negative branch runs
    return RunnerSettings(
        workflows="qwen_edit_2511,qwen_image", models_dir=models_dir, progress_interval_s=0
    )


async def test_tiny_pipelines_run_through_the_runner_and_store_images(
    amqp_url: str, topology: Topology, tmp_path: Path, tiny_settings: RunnerSettings
) -> None:
    objects = tmp_path / "objects"
    (objects / "in").mkdir(parents=True)
    (objects / "in" / "photo.png").write_bytes(png((96, 64)))
    edit = JobDispatchedV1(
        job_id=1,
        attempt=1,
        workflow_type="qwen_edit_2511",
        prompt="make the sky purple",
        image_key="in/photo.png",
        seed=7,
    )
    text_to_image = JobDispatchedV1(
        job_id=2, attempt=1, workflow_type="qwen_image", prompt="a red fox in snow"
    )
    reports = Reports(amqp_url, topology)
    async with serving_runner(amqp_url, topology, objects, tiny_settings):
        await publish(amqp_url, topology, edit, text_to_image)
        await reports.wait_for("job.completed", 1)
        await reports.wait_for("job.completed", 2)

    # the edit: the size the pipeline encodes the 3:2 reference at (~64² here, its own rule)
    for job_id, size in ((1, edit_reference_size(96 / 64)), (2, (64, 64))):
        [completed] = reports.of("job.completed", job_id)
        with Image.open(objects / completed["result_key"]) as result:
            assert result.format == "PNG"
            assert result.size == size
        assert [p["step"] for p in reports.of("job.progress", job_id)] == list(range(1, STEPS))
        assert reports.of("job.started", job_id)[0]["total_steps"] == STEPS
    assert reports.of("job.completed", 1)[0]["seed"] == 7
    assert reports.of("job.attempt_failed") == []


def test_the_same_seed_gives_the_same_pixels(tiny_settings: RunnerSettings) -> None:
    workflows = build_workflows(tiny_settings)
    photo = Image.open(io.BytesIO(png((64, 64), (10, 120, 200)))).convert("RGB")
    steps: list[int] = []

    def render(name: str, seed: int) -> bytes:
        request = RenderRequest(prompt="paint it", image=photo, seed=seed)
        return workflows[name].render(request, lambda step, total: steps.append(step)).tobytes()

    for name in ("qwen_edit_2511", "qwen_image"):
        first = render(name, 1234)
        assert render(name, 1234) == first
        assert render(name, 1235) != first
    assert steps == list(range(1, STEPS + 1)) * 6
