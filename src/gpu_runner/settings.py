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
    """What every diffusion workflow is configured with (mixed into one class per workflow)."""

    model_subdir: str = ""
    steps: int = Field(default=40, ge=1, le=200)
    guidance: float = Field(default=4.0, ge=0, le=30)
    """`true_cfg_scale`; CFG with the negative prompt is on only above 1."""
    negative_prompt: str = ""
    """Used when guidance > 1; empty means a single space, as Qwen-Image's own examples do."""
    resolution: int = Field(default=1024, ge=64, le=4096)
    """Output is about resolution² pixels (edits keep the input's aspect ratio)."""
    seed_policy: SeedPolicy = "job"
    seed: int = Field(default=0, ge=0, lt=2**63)
    dtype: DtypeName = "auto"
    """`auto`: bfloat16 on CUDA, float32 on CPU."""
    lora_path: str = ""
    """A LoRA (e.g. few-step Lightning) under the models dir, fused at load; empty for none."""
    lora_scale: float = Field(default=1.0, ge=0, le=4)


class QwenEditSettings(PipelineSettings, BaseSettings):
    """`qwen_edit_2511`: QwenImageEditPlusPipeline (Qwen-Image-Edit-2511)."""

    model_config = SettingsConfigDict(
        env_prefix="GPU_QWEN_EDIT_2511_", env_file=".env", extra="ignore"
    )

    model_subdir: str = "Qwen-Image-Edit-2511"


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
