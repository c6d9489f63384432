"""The runner's configuration: what it serves and how each workflow runs.

Where objects live (`STORAGE_*`) is `object_store.StorageSettings`, shared with the gateway.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.events import WORKFLOW_TYPES

SeedPolicy = Literal["job", "random", "fixed"]
"""`job`: the dispatch's seed, or one derived from the job id; `random`; `fixed`: `seed`."""
DtypeName = Literal["auto", "bfloat16", "float16", "float32"]
Profile = Literal["standard", "lightning"]
"""`standard`: the model as published (e.g. 40 steps with true CFG); `lightning`: a few-step
distilled LoRA (lightx2v's Qwen-Image Lightning): 4 or 8 steps, CFG off, scheduler shift 3."""
LIGHTNING_STEPS = (4, 8)
LIGHTNING_SHIFT = 3.0


class RunnerSettings(BaseSettings):
    """Which workflows this runner serves, on which device, and how it treats input."""

    model_config = SettingsConfigDict(env_prefix="GPU_", env_file=".env", extra="ignore")

    workflows: str = "qwen_edit_2511"
    """Comma-separated workflow types; the runner consumes only their work queues."""
    models_dir: Path = Path("models")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    runner_id: str = ""
    """Names this runner in JobStarted; empty means `<hostname>-<pid>`."""
    stage_ahead: int = Field(default=1, ge=0, le=4)
    """Jobs fetched and decoded while the current one runs (0: strictly one message in hand)."""
    progress_interval_s: float = Field(default=1.0, ge=0)
    max_input_bytes: int = Field(default=20_000_000, ge=1)
    max_input_pixels: int = Field(default=40_000_000, ge=1)
    allowed_formats: str = "JPEG,PNG,WEBP"
    result_prefix: str = Field(default="results", pattern=r"^[a-zA-Z0-9_./-]{1,100}$")
    publish_retry_s: float = Field(default=60.0, ge=0)
    """How long an outcome publish is retried before the job goes back to its queue."""
    max_consecutive_ooms: int = Field(default=3, ge=1)
    """Out-of-memory failures in a row (the cache freed after each) that end the process."""
    heartbeat_interval_s: float = Field(default=10.0, gt=0, le=3600)
    """How often the runner publishes its status (RunnerHeartbeat) for the operators."""

    @model_validator(mode="after")
    def _known_workflows(self) -> RunnerSettings:
        unknown = set(self.served) - set(WORKFLOW_TYPES)
        if not self.served or unknown:
            raise ValueError(
                f"GPU_WORKFLOWS must name some of {', '.join(WORKFLOW_TYPES)}; "
                f"got {self.workflows!r}"
            )
        return self

    @property
    def served(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w.strip() for w in self.workflows.split(",") if w.strip()))

    @property
    def formats(self) -> frozenset[str]:
        return frozenset(f.strip().upper() for f in self.allowed_formats.split(",") if f.strip())

    @property
    def name(self) -> str:
        return self.runner_id or f"{socket.gethostname()}-{os.getpid()}"


class PipelineSettings(BaseModel):
    """What every diffusion workflow is configured with (mixed into one class per workflow).

    A profile sets steps, guidance, scheduler and LoRA together; `check()` refuses a
    combination the profile does not run well with (docs/deployment.md, GPU workflows)."""

    model_subdir: str = ""
    profile: Profile = "standard"
    steps: int = Field(default=40, ge=1, le=200)
    guidance: float = Field(default=4.0, ge=0, le=30)
    """`true_cfg_scale`; CFG with the negative prompt is on only above 1."""
    negative_prompt: str = ""
    """Used when guidance > 1; empty means a single space, as Qwen-Image's own examples do."""
    resolution: int = Field(default=1024, ge=64, le=4096)
    """Text to image: about resolution² pixels. Edits are as large as the reference the
    pipeline encodes (about 1024², its own rule), whatever this says."""
    max_aspect_ratio: float = Field(default=3.0, ge=1.0, le=50.0)
    """Edits of a longer side over this many times the shorter are refused (permanently)."""
    seed_policy: SeedPolicy = "job"
    seed: int = Field(default=0, ge=0, lt=2**63)
    dtype: DtypeName = "auto"
    """`auto`: bfloat16 on CUDA, float32 on CPU."""
    lora_path: str = ""
    """A LoRA (e.g. few-step Lightning) file under the models dir, loaded with peft; empty for
    none."""
    lora_scale: float = Field(default=1.0, ge=0, le=4)
    lora_fuse: bool = True
    """Fuse the LoRA into the transformer's weights in place (no per-step LoRA cost, no second
    copy); a fused workflow is its own workflow type, since its weights differ."""
    scheduler_shift: float | None = Field(default=None, gt=0, le=20)
    """A fixed flow-matching shift (exponential, as Lightning was distilled with: 3) instead of
    the model's resolution-dependent one; None keeps the model's scheduler config."""
    working_memory_gib: float = Field(default=8.0, ge=0)
    """Device memory a render needs beyond the weights (activations, VAE decode at ~1024²): an
    estimate from the model's shapes, counted by the start-up memory check."""
    warmup_aspects: str = "1.0"
    """Width/height ratios rendered (`warmup_steps` each) before the runner says ready, so the
    first jobs find kernels chosen and, with compile, graphs built; empty skips warm-up."""
    warmup_steps: int = Field(default=2, ge=1, le=50)
    attention_backend: str = ""
    """diffusers' attention backend for the transformer (`flash`, `_flash_3`, `_native_cudnn`,
    `sage`, ...); empty keeps its default (torch SDPA). Off until measured on the GPU."""
    compile_repeated_blocks: bool = False
    """`torch.compile` the transformer's repeated blocks (warm-up pays for it before ready)."""
    fp8: bool = False
    """FP8 weights for the transformer's linear layers (torchao, when installed)."""
    step_cache_threshold: float = Field(default=0.0, ge=0, le=1)
    """First-block step cache: skip the rest of a step whose first block's output changed by
    less than this (0: off). Trades fidelity for speed; off until measured."""

    @property
    def warmup_ratios(self) -> tuple[float, ...]:
        return tuple(float(r) for r in self.warmup_aspects.split(",") if r.strip())


class QwenEditSettings(PipelineSettings, BaseSettings):
    """`qwen_edit_2511`: QwenImageEditPlusPipeline (Qwen-Image-Edit-2511)."""

    model_config = SettingsConfigDict(
        env_prefix="GPU_QWEN_EDIT_2511_", env_file=".env", extra="ignore"
    )

    model_subdir: str = "Qwen-Image-Edit-2511"
    warmup_aspects: str = "0.75,1.0,1.333"
    """Phone photos first: 3:4 portrait, square, 4:3 landscape."""


class QwenEditLightningSettings(PipelineSettings, BaseSettings):
    """`qwen_edit_2511_lightning`: Qwen-Image-Edit-2511 with the Lightning LoRA fused: few steps,
    no CFG. Its own workflow (queue) since its weights differ from `qwen_edit_2511`'s."""

    model_config = SettingsConfigDict(
        env_prefix="GPU_QWEN_EDIT_2511_LIGHTNING_", env_file=".env", extra="ignore"
    )

    model_subdir: str = "Qwen-Image-Edit-2511"
    profile: Profile = "lightning"
    steps: int = Field(default=4, ge=1, le=200)
    guidance: float = Field(default=1.0, ge=0, le=30)
    scheduler_shift: float | None = Field(default=LIGHTNING_SHIFT, gt=0, le=20)
    lora_path: str = (
        "Qwen-Image-Edit-2511-Lightning/Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors"
    )
    warmup_aspects: str = "0.75,1.0,1.333"


class QwenImageSettings(PipelineSettings, BaseSettings):
    """`qwen_image`: QwenImagePipeline, text to image for prompt-only jobs."""

    model_config = SettingsConfigDict(env_prefix="GPU_QWEN_IMAGE_", env_file=".env", extra="ignore")

    model_subdir: str = "Qwen-Image"
    steps: int = Field(default=50, ge=1, le=200)


class PillowFilterSettings(BaseSettings):
    """`pillow_filter`: cheap CPU filters named by the job's prompt."""

    model_config = SettingsConfigDict(
        env_prefix="GPU_PILLOW_FILTER_", env_file=".env", extra="ignore"
    )

    steps: int = Field(default=1, ge=1, le=1000)
    step_delay_s: float = Field(default=0.0, ge=0)
    """An artificial pause per step, for exercising progress, cancel and crashes."""
