"""diffusers pipelines as workflows: loaded once from a local directory straight onto the device,
shaped by their profile, warmed up before the runner says ready."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpu_runner.failures import (
    OUT_OF_MEMORY,
    AttemptFailure,
    ModelDirectoryMissingError,
    ProfileError,
    classify,
)
from gpu_runner.settings import LIGHTNING_SHIFT, LIGHTNING_STEPS, PipelineSettings
from gpu_runner.workflows.base import RenderRequest, StepObserver, choose_seed
from gpu_runner.workflows.components import (
    GIB,
    SHAREABLE,
    SharedComponents,
    component_dirs,
    parameter_count,
)
from gpu_runner.workflows.device import (
    choose_device,
    choose_dtype,
    device_map,
    free_cached_memory,
)
from gpu_runner.workflows.memory import Need

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

MIN_SIDE = 32
"""The pipeline's own rule rounds each side to a multiple of 32; under that it is zero."""
ADAPTER = "profile"


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
        shared: SharedComponents | None = None,
    ) -> None:
        self.name = name
        self.needs_image = needs_image
        self._pipeline_class = pipeline_class
        self._settings = settings
        self._model_dir = models_dir / settings.model_subdir
        self._lora = models_dir / settings.lora_path if settings.lora_path else None
        self._device_spec = device
        self._device = "cpu"
        self._shared = shared or SharedComponents()
        self._pipeline: Any = None

    def check(self) -> None:
        """The files exist and the profile is consistent: before anything loads."""
        if not (self._model_dir / "model_index.json").is_file():
            raise ModelDirectoryMissingError(
                f"workflow {self.name}: no diffusers model in {self._model_dir} "
                f"(model_index.json missing); set GPU_MODELS_DIR or the workflow's MODEL_SUBDIR"
            )
        if self._lora is not None and not self._lora.is_file():
            raise ModelDirectoryMissingError(f"workflow {self.name}: LoRA {self._lora} missing")
        check_profile(self.name, self._settings)

    def memory_needs(self) -> list[Need]:
        """Weights per component in the dtype they load in, and the working memory of a render."""
        s = self._settings
        element = choose_dtype(s.dtype, choose_device(self._device_spec)).itemsize
        needs = []
        for part, directory in component_dirs(self._model_dir).items():
            size = parameter_count(directory) * element
            if part == "transformer":
                loading = 0
                if s.fp8:  # loaded in its dtype, then quantized in place
                    loading = size - parameter_count(directory)
                    size = parameter_count(directory)  # a byte a weight (norms, biases aside)
                if self._lora is not None and not s.lora_fuse:
                    size += self._lora.stat().st_size
                # a transformer is never shared: a LoRA or compile would change it for both
                needs.append(Need(part, size, loading=loading))
            else:
                needs.append(Need(part, size, directory))
        return [*needs, Need("working", round(s.working_memory_gib * GIB), working=True)]

    def load(self) -> None:
        if self._pipeline is not None:
            return
        import diffusers

        self.check()
        s = self._settings
        self._device = choose_device(self._device_spec)
        dirs = component_dirs(self._model_dir)
        shared = {
            part: module
            for part in SHAREABLE
            if part in dirs and (module := self._shared.find(dirs[part])) is not None
        }
        pipeline = getattr(diffusers, self._pipeline_class).from_pretrained(
            self._model_dir,
            dtype=choose_dtype(s.dtype, self._device),
            # each component straight from its files onto the device, none staged in host RAM
            device_map=device_map(self._device),
            **shared,
        )
        for part in SHAREABLE:
            if part in dirs:
                self._shared.add(dirs[part], getattr(pipeline, part))
        if shared:
            log.info("workflow %s shares %s with an earlier workflow", self.name, ", ".join(shared))
        self._serve(pipeline)

    def adopt(self, pipeline: Any) -> None:
        """Serve a pipeline built elsewhere (bench/gpu.py builds random weights on the device)
        exactly as a loaded one: profile, speed levers, warm-up."""
        check_profile(self.name, self._settings)
        self._device = choose_device(self._device_spec)
        self._serve(pipeline)

    def _serve(self, pipeline: Any) -> None:
        pipeline.set_progress_bar_config(disable=True)
        self._pipeline = pipeline
        self._apply_profile()
        self._apply_speed_levers()
        self._warm_up()

    def _apply_profile(self) -> None:
        s, pipeline = self._settings, self._pipeline
        if s.scheduler_shift is not None:
            pipeline.scheduler = fixed_shift_scheduler(pipeline.scheduler, s.scheduler_shift)
        if self._lora is None:
            return
        pipeline.load_lora_weights(
            str(self._lora.parent), weight_name=self._lora.name, adapter_name=ADAPTER
        )
        adapted = pipeline.get_list_adapters().get("transformer", [])
        if ADAPTER not in adapted:
            raise ProfileError(
                f"workflow {self.name}: LoRA {self._lora} matched no layer of the transformer "
                "(a LoRA for another model?)"
            )
        if s.lora_fuse:
            # peft merges into each base weight in place (no copy of the transformer); the LoRA
            # layers are dropped afterwards, the fused weights stay
            pipeline.fuse_lora(components=["transformer"], lora_scale=s.lora_scale)
            pipeline.unload_lora_weights()
        else:
            pipeline.set_adapters([ADAPTER], [s.lora_scale])

    def _apply_speed_levers(self) -> None:
        s, transformer = self._settings, self._pipeline.transformer
        if s.fp8:
            from torchao.quantization import (  # type: ignore[import-not-found]
                Float8DynamicActivationFloat8WeightConfig,
                quantize_,
            )

            quantize_(transformer, Float8DynamicActivationFloat8WeightConfig())
        if s.attention_backend:
            transformer.set_attention_backend(s.attention_backend)
        if s.step_cache_threshold > 0:
            from diffusers import FirstBlockCacheConfig

            config: Any = FirstBlockCacheConfig
            transformer.enable_cache(config(threshold=s.step_cache_threshold))
        if s.compile_repeated_blocks:
            transformer.compile_repeated_blocks(fullgraph=True)

    def _warm_up(self) -> None:
        """Render each warm-up shape once, so the first jobs find kernels chosen, the
        allocator grown and (with compile) graphs built."""
        from PIL import Image

        ratios = self._settings.warmup_ratios
        for ratio in ratios if self.needs_image else ratios[:1]:  # text to image: one size
            gray = Image.new("RGB", edit_reference_size(ratio), (128, 128, 128))
            request = RenderRequest(
                prompt="warm-up", image=gray if self.needs_image else None, seed=0
            )
            self.render(request, lambda step, total: None, steps=self._settings.warmup_steps)

    def total_steps(self) -> int:
        return self._settings.steps

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int:
        s = self._settings
        return choose_seed(s.seed_policy, s.seed, job_id, dispatched_seed)

    def render(
        self, request: RenderRequest, on_step: StepObserver, *, steps: int | None = None
    ) -> Image.Image:
        import torch

        self.load()
        s = self._settings
        steps = steps or s.steps
        if self.needs_image:
            width, height = self._output_size(request)
        else:
            width, height = output_size(s.resolution, 1.0)

        def step_ended(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            # Raising here (on cancel) stops at this step, skipping the VAE decode that
            # `pipe._interrupt` would still run.
            on_step(index + 1, steps)
            return tensors

        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "true_cfg_scale": s.guidance,
            "num_inference_steps": steps,
            "width": width,
            "height": height,
            "generator": torch.Generator(device=self._device).manual_seed(request.seed),
            "callback_on_step_end": step_ended,
        }
        if s.guidance > 1:  # true CFG runs only with a negative prompt, and only above 1
            arguments["negative_prompt"] = s.negative_prompt or " "
        if self.needs_image:
            arguments["image"] = request.images  # one to three: the pipeline takes a list
        out_of_memory = None
        try:
            with torch.inference_mode():
                result = self._pipeline(**arguments)
        except Exception as exc:  # torch's own, or a library's "CUDA error: out of memory"
            if classify(exc).reason != OUT_OF_MEMORY:
                raise
            # Only the message is kept: the traceback's frames hold the render's tensors, and
            # they must be gone before the cache is freed.
            out_of_memory = str(exc)
        if out_of_memory is not None:
            free_cached_memory()
            raise AttemptFailure(OUT_OF_MEMORY, out_of_memory, retryable=True)
        image: Image.Image = result.images[0]
        return image

    def _output_size(self, request: RenderRequest) -> tuple[int, int]:
        """The reference's size as the pipeline encodes it; every input's aspect is checked
        first, since the pipeline would shrink an extreme one's short side to nothing."""
        limit = self._settings.max_aspect_ratio
        for image in request.images:
            ratio = image.width / image.height
            if max(ratio, 1 / ratio) > limit or min(edit_condition_size(ratio)) < MIN_SIDE:
                raise AttemptFailure(
                    "aspect_ratio_unsupported",
                    f"{image.width}x{image.height} is {max(ratio, 1 / ratio):.1f}:1; "
                    f"{self.name} edits images up to {limit:g}:1 (crop it first)",
                    retryable=False,
                )
        assert request.image is not None  # the runner refuses image-less jobs first
        return edit_reference_size(request.image.width / request.image.height)


def check_profile(name: str, s: PipelineSettings) -> None:
    """Raise `ProfileError` when the settings contradict their profile."""
    problems = []
    if s.profile == "lightning":
        if s.steps not in LIGHTNING_STEPS:
            problems.append(f"STEPS={s.steps}, Lightning runs 4 or 8")
        if s.guidance > 1:
            problems.append(f"GUIDANCE={s.guidance}, Lightning runs without CFG (1.0)")
        if s.scheduler_shift != LIGHTNING_SHIFT:
            problems.append(f"SCHEDULER_SHIFT={s.scheduler_shift}, Lightning was distilled at 3")
        if not s.lora_path:
            problems.append("no LORA_PATH: Lightning is a LoRA")
    named = re.search(r"(\d+)-?steps", Path(s.lora_path).name) if s.lora_path else None
    if named is not None and int(named[1]) != s.steps:
        problems.append(f"STEPS={s.steps}, but the LoRA {s.lora_path} is for {named[1]}")
    if (s.fp8 or s.compile_repeated_blocks) and not s.lora_fuse and s.lora_path:
        problems.append("FP8 and compile need LORA_FUSE (peft's layers would be left as they are)")
    if s.fp8:
        try:
            import torchao  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            problems.append("FP8 needs torchao, which is not installed")
    if s.attention_backend and (unusable := attention_backend_problem(s.attention_backend)):
        problems.append(unusable)
    if problems:
        raise ProfileError(f"workflow {name} ({s.profile} profile): " + "; ".join(problems))


def attention_backend_problem(backend: str) -> str | None:
    """Why diffusers cannot run `backend` here (unknown, or its package missing), asked before
    the weights load rather than found at the transformer's first use after."""
    from diffusers.models import attention_dispatch

    try:
        chosen = attention_dispatch.AttentionBackendName(backend.lower())
    except ValueError:
        known = ", ".join(name.value for name in attention_dispatch.AttentionBackendName)
        return f"ATTENTION_BACKEND={backend} is none of diffusers' ({known})"
    try:  # diffusers' own check, the one set_attention_backend makes
        attention_dispatch._check_attention_backend_requirements(chosen)
    except (RuntimeError, ImportError) as exc:
        return f"ATTENTION_BACKEND={backend}: {exc}"
    return None


def fixed_shift_scheduler(scheduler: Any, shift: float) -> Any:
    """The model's flow-matching scheduler with one shift at every resolution, as Lightning's
    published config has it: the exponential time shift with mu = ln(shift) at both ends of the
    resolution range, which is sigma' = shift·sigma / (1 + (shift - 1)·sigma)."""
    return type(scheduler).from_config(
        scheduler.config,
        use_dynamic_shifting=True,
        time_shift_type="exponential",
        base_shift=math.log(shift),
        max_shift=math.log(shift),
        shift=1.0,
        shift_terminal=None,
    )


def edit_reference_size(ratio: float) -> tuple[int, int]:
    """The size QwenImageEditPlusPipeline encodes a reference image at (its VAE_IMAGE_SIZE area,
    by its own calculate_dimensions): the output takes exactly this size."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    rule: Any = plus.calculate_dimensions
    width, height = rule(plus.VAE_IMAGE_SIZE, ratio)
    return int(width), int(height)


def edit_condition_size(ratio: float) -> tuple[int, int]:
    """The size the pipeline gives the vision encoder the image at (CONDITION_IMAGE_SIZE)."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    rule: Any = plus.calculate_dimensions
    width, height = rule(plus.CONDITION_IMAGE_SIZE, ratio)
    return int(width), int(height)


def output_size(resolution: int, aspect: float) -> tuple[int, int]:
    """Text to image: about resolution² pixels at the given width/height ratio; sides are
    multiples of 16 (the VAE's 8x downscale times the transformer's 2x2 patches)."""
    width = math.sqrt(resolution * resolution * aspect)
    height = width / aspect
    return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)
