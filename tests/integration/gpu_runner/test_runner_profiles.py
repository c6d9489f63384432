"""The tiny random Qwen-Image pipelines through the production workflow code (on CPU): exact
sizes, refused aspect ratios, the Lightning profile with a LoRA fused through peft, components
shared between workflows, memory counted from the files, warm-up, out-of-memory recovery."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus
from PIL import Image

from gpu_runner.failures import AttemptFailure
from gpu_runner.settings import QwenEditLightningSettings, RunnerSettings
from gpu_runner.workflows import RenderRequest, build_workflows
from gpu_runner.workflows import diffusion as diffusion_module
from gpu_runner.workflows.components import parameter_count
from gpu_runner.workflows.diffusion import DiffusionWorkflow, edit_reference_size
from sandbox.models import (
    build_tiny_edit_pipeline,
    build_tiny_lora,
    build_tiny_text_to_image_pipeline,
    shrink_edit_image_sizes,
)

LORA = "Qwen-Image-Edit-2511-Lightning/tiny-lightning-4steps.safetensors"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_tiny_edit_pipeline(root / "Qwen-Image-Edit-2511")
    build_tiny_text_to_image_pipeline(root / "Qwen-Image")
    build_tiny_lora(root / LORA)
    return root


@pytest.fixture
def settings(tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> RunnerSettings:
    shrink_edit_image_sizes()
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 128 * 128)  # sizes fine enough to tell apart
    for prefix in ("GPU_QWEN_EDIT_2511_", "GPU_QWEN_EDIT_2511_LIGHTNING_", "GPU_QWEN_IMAGE_"):
        monkeypatch.setenv(f"{prefix}WARMUP_ASPECTS", "")
        monkeypatch.setenv(f"{prefix}RESOLUTION", "64")
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_STEPS", "4")
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_GUIDANCE", "1")  # same steps, no CFG: comparable
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_LIGHTNING_LORA_PATH", LORA)
    return RunnerSettings(
        workflows="qwen_edit_2511,qwen_edit_2511_lightning,qwen_image", models_dir=tiny_models
    )


def photo(width: int, height: int) -> Image.Image:
    return Image.radial_gradient("L").resize((width, height)).convert("RGB")


def render(workflow: Any, image: Image.Image | None, seed: int = 3) -> Image.Image:
    steps: list[int] = []
    result: Image.Image = workflow.render(
        RenderRequest(prompt="paint it", image=image, seed=seed), lambda s, t: steps.append(s)
    )
    assert steps == list(range(1, workflow.total_steps() + 1))
    return result


def test_an_edit_is_exactly_as_large_as_the_reference_the_pipeline_encodes(
    settings: RunnerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert edit_reference_size(4032 / 3024) == (160, 96)  # at the test's 128² area
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 1024 * 1024)
    assert edit_reference_size(4032 / 3024) == (1184, 896)  # a 12 MP phone photo, for real
    assert edit_reference_size(1080 / 1920) == (768, 1376)
    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", 128 * 128)

    workflow = build_workflows(settings)["qwen_edit_2511"]
    workflow.load()
    pipeline = workflow._pipeline  # type: ignore[attr-defined]
    encoded: list[tuple[int, int]] = []
    preprocess = pipeline.image_processor.preprocess

    def recording(image: Any, height: int, width: int, **kwargs: Any) -> Any:
        encoded.append((width, height))
        return preprocess(image, height, width, **kwargs)

    monkeypatch.setattr(pipeline.image_processor, "preprocess", recording)
    for size in ((96, 64), (64, 96), (120, 90), (90, 160), (70, 70)):
        result = render(workflow, photo(*size))
        assert result.size == encoded[-1], size


def test_an_extreme_aspect_ratio_is_refused_for_good_before_any_step(
    settings: RunnerSettings,
) -> None:
    workflow = build_workflows(settings)["qwen_edit_2511"]
    steps: list[int] = []
    with pytest.raises(AttemptFailure) as refused:
        workflow.render(
            RenderRequest(prompt="x", image=photo(400, 100), seed=1), lambda s, t: steps.append(s)
        )
    assert (refused.value.reason, refused.value.retryable) == ("aspect_ratio_unsupported", False)
    assert refused.value.detail == (
        "400x100 is 4.0:1; qwen_edit_2511 edits images up to 3:1 (crop it first)"
    )
    assert steps == []
    assert render(workflow, photo(300, 100)).size == edit_reference_size(3.0)  # 3:1 is fine


def test_the_lightning_profile_fuses_its_lora_and_shares_the_encoder_and_vae(
    settings: RunnerSettings,
) -> None:
    workflows = build_workflows(settings)
    base, fast, text = (workflows[n] for n in settings.served)
    for workflow in workflows.values():
        workflow.load()
    pipelines = [w._pipeline for w in (base, fast, text)]  # type: ignore[attr-defined]
    assert pipelines[0].text_encoder is pipelines[1].text_encoder is pipelines[2].text_encoder
    assert pipelines[0].vae is pipelines[1].vae is pipelines[2].vae
    assert pipelines[0].transformer is not pipelines[1].transformer
    # fused, the LoRA's layers gone: the transformer is the base's shape with other weights
    assert not [n for n, _ in pipelines[1].transformer.named_parameters() if "lora" in n]
    assert parameter_count(settings.models_dir / "Qwen-Image-Edit-2511" / "transformer") == sum(
        p.numel() for p in pipelines[1].transformer.parameters()
    )
    scheduler = pipelines[1].scheduler.config
    assert scheduler.base_shift == scheduler.max_shift == pytest.approx(math.log(3))
    assert scheduler.shift_terminal is None
    assert pipelines[0].scheduler.config.base_shift == 0.5  # the base keeps the model's
    assert fast.total_steps() == 4

    image = photo(96, 64)
    fused = render(fast, image)
    assert render(fast, image).tobytes() == fused.tobytes()
    assert fused.tobytes() != render(base, image).tobytes()  # the LoRA changes the result

    unfused = DiffusionWorkflow(
        "unfused",
        "QwenImageEditPlusPipeline",
        QwenEditLightningSettings(lora_fuse=False),
        models_dir=settings.models_dir,
        device="cpu",
        needs_image=True,
    )
    kept = render(unfused, image)
    assert [n for n, _ in unfused._pipeline.transformer.named_parameters() if "lora" in n]
    difference = max(abs(a - b) for a, b in zip(kept.tobytes(), fused.tobytes(), strict=True))
    assert difference <= 2  # fusing is the same arithmetic, rounded otherwise


def test_memory_is_read_from_the_weight_files(settings: RunnerSettings) -> None:
    workflow = build_workflows(settings)["qwen_edit_2511"]
    needs = {need.part: need.bytes for need in workflow.memory_needs()}  # type: ignore[attr-defined]
    workflow.load()
    pipeline = workflow._pipeline  # type: ignore[attr-defined]
    for part in ("transformer", "text_encoder", "vae"):
        held = sum(p.numel() * p.element_size() for p in getattr(pipeline, part).parameters())
        assert needs[part] == held, part  # float32 on the CPU
    assert needs["working"] == 8 * 2**30


def test_an_fp8_transformer_counts_its_unquantized_size_while_it_loads(
    settings: RunnerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_FP8", "true")
    workflow = build_workflows(settings)["qwen_edit_2511"]
    needs = {need.part: need for need in workflow.memory_needs()}  # type: ignore[attr-defined]
    count = parameter_count(settings.models_dir / "Qwen-Image-Edit-2511" / "transformer")
    assert (needs["transformer"].bytes, needs["transformer"].loading) == (count, 3 * count)
    assert needs["text_encoder"].loading == 0  # float32 on the CPU: 4 bytes a weight, then 1


def test_warm_up_renders_the_first_jobs_shapes_before_ready(
    settings: RunnerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_WARMUP_ASPECTS", "0.75,1.333")
    monkeypatch.setenv("GPU_QWEN_EDIT_2511_WARMUP_STEPS", "1")
    workflow = build_workflows(settings)["qwen_edit_2511"]
    warmed: list[tuple[tuple[int, int], int | None]] = []
    original = DiffusionWorkflow.render

    def recording(self: DiffusionWorkflow, request: RenderRequest, *args: Any, **kw: Any) -> Any:
        assert request.image is not None
        warmed.append((request.image.size, kw.get("steps")))
        return original(self, request, *args, **kw)

    monkeypatch.setattr(DiffusionWorkflow, "render", recording)
    workflow.load()
    assert warmed == [(edit_reference_size(0.75), 1), (edit_reference_size(1.333), 1)]


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("CUDA error: out of memory"),  # from a library's allocation, not torch's
    ],
    ids=["torch", "library"],
)
def test_out_of_memory_frees_the_cache_and_the_next_job_runs(
    settings: RunnerSettings, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    workflow = build_workflows(settings)["qwen_image"]
    workflow.load()
    transformer = workflow._pipeline.transformer  # type: ignore[attr-defined]
    forward = transformer.forward
    freed: list[bool] = []
    monkeypatch.setattr(diffusion_module, "free_cached_memory", lambda: freed.append(True))

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        transformer.forward = forward  # once
        raise error

    transformer.forward = out_of_memory
    with pytest.raises(AttemptFailure) as failed:
        workflow.render(RenderRequest(prompt="x", image=None, seed=1), lambda s, t: None)
    assert (failed.value.reason, failed.value.retryable) == ("gpu_out_of_memory", True)
    assert freed == [True]
    assert render(workflow, None).size == (64, 64)
