"""diffusers pipelines as workflows: loaded once from a local directory, warm afterwards."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_runner.failures import ModelDirectoryMissingError
from gpu_runner.settings import PipelineSettings
from gpu_runner.workflows.base import RenderRequest, StepObserver, choose_seed
from gpu_runner.workflows.device import choose_device, choose_dtype

if TYPE_CHECKING:
    from PIL import Image


class DiffusionWorkflow:
    """One diffusers pipeline class, its model directory and its per-workflow settings."""

    def __init__(
        self,
        name: str,
        pipeline_class: str,
        settings: PipelineSettings,
        *,
        models_dir: Path,
        device: str,
        needs_image: bool,
    ) -> None:
        self.name = name
        self.needs_image = needs_image
        self._pipeline_class = pipeline_class
        self._settings = settings
        self._model_dir = models_dir / settings.model_subdir
        self._lora = models_dir / settings.lora_path if settings.lora_path else None
        self._device_spec = device
        self._device = "cpu"
        self._pipeline: Any = None

    def check(self) -> None:
        if not (self._model_dir / "model_index.json").is_file():
            raise ModelDirectoryMissingError(
                f"workflow {self.name}: no diffusers model in {self._model_dir} "
                f"(model_index.json missing); set GPU_MODELS_DIR or the workflow's MODEL_SUBDIR"
            )
        if self._lora is not None and not self._lora.exists():
            raise ModelDirectoryMissingError(f"workflow {self.name}: LoRA {self._lora} missing")

    def load(self) -> None:
        if self._pipeline is not None:
            return
        import diffusers

        self.check()
        self._device = choose_device(self._device_spec)
        dtype = choose_dtype(self._settings.dtype, self._device)
        pipeline = getattr(diffusers, self._pipeline_class).from_pretrained(
            self._model_dir, dtype=dtype
        )
        if self._lora is not None:
            pipeline.load_lora_weights(str(self._lora))
            pipeline.fuse_lora(lora_scale=self._settings.lora_scale)
        pipeline.set_progress_bar_config(disable=True)
        self._pipeline = pipeline.to(self._device)

    def total_steps(self) -> int:
        return self._settings.steps

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int:
        s = self._settings
        return choose_seed(s.seed_policy, s.seed, job_id, dispatched_seed)

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        import torch

        self.load()
        s = self._settings
        aspect = 1.0
        if request.image is not None and self.needs_image:
            aspect = request.image.width / request.image.height
        width, height = output_size(s.resolution, aspect)

        def step_ended(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            # Raising here (on cancel) stops at this step, skipping the VAE decode that
            # `pipe._interrupt` would still run.
            on_step(index + 1, s.steps)
            return tensors

        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": s.negative_prompt or " ",
            "true_cfg_scale": s.guidance,
            "num_inference_steps": s.steps,
            "width": width,
            "height": height,
            "generator": torch.Generator(device=self._device).manual_seed(request.seed),
            "callback_on_step_end": step_ended,
        }
        if self.needs_image:
            arguments["image"] = request.images  # one to three: the pipeline takes a list
        with torch.inference_mode():
            result = self._pipeline(**arguments)
        image: Image.Image = result.images[0]
        return image


def output_size(resolution: int, aspect: float) -> tuple[int, int]:
    """About resolution² pixels at the given width/height ratio; sides are multiples of 16
    (the VAE's 8x downscale times the transformer's 2x2 patches)."""
    width = math.sqrt(resolution * resolution * aspect)
    height = width / aspect
    return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)
