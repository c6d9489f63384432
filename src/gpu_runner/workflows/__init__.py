"""The registry: workflow type -> the adapter that runs it."""

from __future__ import annotations

from gpu_runner.settings import (
    PillowFilterSettings,
    QwenEditSettings,
    QwenImageSettings,
    RunnerSettings,
)
from gpu_runner.workflows.base import RenderRequest, StepObserver, Workflow
from gpu_runner.workflows.diffusion import DiffusionWorkflow
from gpu_runner.workflows.pillow_filter import PillowFilterWorkflow

__all__ = ["RenderRequest", "StepObserver", "Workflow", "build_workflow", "build_workflows"]


def build_workflow(name: str, settings: RunnerSettings) -> Workflow:
    if name == "qwen_edit_2511":
        return DiffusionWorkflow(
            name,
            "QwenImageEditPlusPipeline",
            QwenEditSettings(),
            models_dir=settings.models_dir,
            device=settings.device,
            needs_image=True,
        )
    if name == "qwen_image":
        return DiffusionWorkflow(
            name,
            "QwenImagePipeline",
            QwenImageSettings(),
            models_dir=settings.models_dir,
            device=settings.device,
            needs_image=False,
        )
    if name == "pillow_filter":
        return PillowFilterWorkflow(PillowFilterSettings())
    raise ValueError(f"no workflow {name!r}")


def build_workflows(settings: RunnerSettings) -> dict[str, Workflow]:
    """The workflows this runner serves (GPU_WORKFLOWS), none loaded yet."""
    return {name: build_workflow(name, settings) for name in settings.served}
