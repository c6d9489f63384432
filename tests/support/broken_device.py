"""`python -m support.broken_device`: the runner's own entry point (`gpu_runner.__main__.serve`)
with a text-to-image workflow whose device breaks for good on its first job, as a CUDA context
does after an illegal memory access. Run it in a subprocess against a test namespace."""

from __future__ import annotations

from PIL import Image

from gpu_runner.__main__ import serve
from gpu_runner.app import Settings
from gpu_runner.workflows.base import RenderRequest, StepObserver


class AcceleratorError(RuntimeError):
    """Named like torch.AcceleratorError, what torch raises for a CUDA error."""


class BrokenDevice:
    name = "qwen_image"
    needs_image = False

    def check(self) -> None: ...

    def load(self) -> None: ...

    def total_steps(self) -> int:
        return 2

    def seed_for(self, job_id: int, dispatched_seed: int | None) -> int:
        return 1

    def render(self, request: RenderRequest, on_step: StepObserver) -> Image.Image:
        on_step(1, 2)
        raise AcceleratorError("CUDA error: an illegal memory access was encountered")


if __name__ == "__main__":
    serve(Settings(), workflows={"qwen_image": BrokenDevice()})
