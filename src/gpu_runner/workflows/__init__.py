"""The registry: workflow type -> the adapter that runs it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from gpu_runner.settings import (
    PillowFilterSettings,
    PipelineSettings,
    QwenEditLightningSettings,
    QwenEditSettings,
    QwenImageSettings,
    RunnerSettings,
)
from gpu_runner.workflows.base import RenderRequest, StepObserver, Workflow
from gpu_runner.workflows.components import SharedComponents
from gpu_runner.workflows.diffusion import DiffusionWorkflow
from gpu_runner.workflows.pillow_filter import PillowFilterWorkflow

__all__ = [
    "RenderRequest",
    "StepObserver",
    "Workflow",
    "build_workflow",
    "build_workflows",
    "check_memory",
]

log = logging.getLogger(__name__)

EDIT_PIPELINE = "QwenImageEditPlusPipeline"


def build_workflow(
    name: str, settings: RunnerSettings, shared: SharedComponents | None = None
) -> Workflow:
    def diffusion(pipeline: str, pipeline_settings: PipelineSettings) -> DiffusionWorkflow:
        return DiffusionWorkflow(
            name,
            pipeline,
            pipeline_settings,
            models_dir=settings.models_dir,
            device=settings.device,
            needs_image=pipeline == EDIT_PIPELINE,
            shared=shared,
        )

    if name == "qwen_edit_2511":
        return diffusion(EDIT_PIPELINE, QwenEditSettings())
    if name == "qwen_edit_2511_lightning":
        return diffusion(EDIT_PIPELINE, QwenEditLightningSettings())
    if name == "qwen_image":
        return diffusion("QwenImagePipeline", QwenImageSettings())
    if name == "pillow_filter":
        return PillowFilterWorkflow(PillowFilterSettings())
    raise ValueError(f"no workflow {name!r}")


def build_workflows(settings: RunnerSettings) -> dict[str, Workflow]:
    """The workflows this runner serves (GPU_WORKFLOWS), none loaded yet; they load their text
    encoder and VAE once between them where the files are the same."""
    shared = SharedComponents()
    return {name: build_workflow(name, settings, shared) for name in settings.served}


def check_memory(workflows: Iterable[Workflow], settings: RunnerSettings) -> None:
    """On a GPU: raise `InsufficientMemoryError` when the diffusion workflows do not fit its free
    memory (nothing is loaded yet). The CPU is not checked."""
    diffusion = [w for w in workflows if isinstance(w, DiffusionWorkflow)]
    if not diffusion:
        return
    from gpu_runner.workflows.device import choose_device, memory_of
    from gpu_runner.workflows.memory import check_fits, describe

    device = choose_device(settings.device)
    memory = memory_of(device)
    if memory is None:
        return
    plan = check_fits(diffusion, *memory, device, settings.served)
    log.info("device memory for %s (%.1f GiB free):\n%s", device, memory[0] / 2**30, describe(plan))
